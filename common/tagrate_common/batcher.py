"""Dynamic batching, Triton-style: items submitted one at a time by many
concurrent callers run through a model together.

One worker thread owns the batch function. It waits for the first item, then
keeps gathering until the batch holds ``max_batch_size`` items or the oldest
item has waited ``max_queue_delay_ms``, and calls the batch function ONCE for
the lot; each caller's future then gets its own result (or the batch's
exception). While a batch runs, new items queue up, so under load batches fill
without any added delay, and with a single caller the delay is the only cost.

Callers do their own decoding and preprocessing in their own threads before
submitting, so that work overlaps with the forward pass of the batch before.

The queue is bounded: a submit that finds it full raises
:class:`~tagrate_common.errors.Overloaded` at once (RESOURCE_EXHAUSTED on the
wire, 503 at the gateway) instead of letting latency grow without limit.

Items are foreground (a person waits: /tag, /rate) or background (the
dataset service's tagging and embedding of its imports; see
:data:`call_priority`). A batch takes the queued foreground items first, in
order of arrival, and fills the room left with background ones, so an
interactive call waits for at most the batch that is running, not for a
backlog of imports. Background work cannot starve: a background item that has
waited ``max_background_wait_s`` counts as foreground from then on (in its
order of arrival), so under a sustained interactive load background work
still moves, each item late by about that wait. Background items may fill at
most :data:`BACKGROUND_QUEUE_SHARE` of the queue; the rest is kept for
foreground work, which a background flood can therefore never refuse.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

from prometheus_client import Counter, Gauge, Histogram

from .errors import DeadlineExceeded, Overloaded, Unavailable

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")

_FOREVER = 86_400.0  # longer waits than a day count as no timeout at all

Priority = Literal["foreground", "background"]
FOREGROUND: Priority = "foreground"
BACKGROUND: Priority = "background"

# The priority of the work the current thread submits, for code that submits
# on a caller's behalf without taking a parameter for it (ImagePipeline.run).
# The gRPC server sets it for each call from the caller's metadata
# (tagrate_common.grpc_wire.PRIORITY_HEADER); anything else is foreground.
call_priority: contextvars.ContextVar[Priority] = contextvars.ContextVar("tagrate_call_priority", default=FOREGROUND)

# Background items may fill at most this share of a batcher's queue: the rest
# is room an interactive call always finds, however large the import backlog.
BACKGROUND_QUEUE_SHARE = 0.75
# After this long in the queue a background item is served like foreground:
# without it a steady interactive load would hold imports back forever.
DEFAULT_MAX_BACKGROUND_WAIT_S = 10.0

BATCH_SIZE = Histogram(
    "tagrate_batcher_batch_size",
    "Items per call of the batch function.",
    ["batcher"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
BATCH_SECONDS = Histogram(
    "tagrate_batcher_batch_seconds",
    "Time in the batch function per batch.",
    ["batcher"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
QUEUE_DEPTH = Gauge("tagrate_batcher_queue_depth", "Items waiting for a batch.", ["batcher"])
BACKGROUND_DEPTH = Gauge(
    "tagrate_batcher_background_queue_depth", "Background items waiting for a batch (of the queue depth).", ["batcher"]
)
REJECTED = Counter("tagrate_batcher_rejected_total", "Items refused because the queue was full.", ["batcher"])


class InFlight:
    """How many items are on their way to a batcher: being prepared by their
    callers, queued or running. A batch that holds all of them is alone on
    the machine, which lets a CPU model give a lone item every thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    @contextlib.contextmanager
    def track(self, items: int) -> Iterator[None]:
        """Counts ``items`` for the duration of the block."""
        with self._lock:
            self._count += items
        try:
            yield
        finally:
            with self._lock:
                self._count -= items


@dataclass
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    enqueued: float
    future: Future[ResultT] = field(default_factory=Future)


def _take(queue: deque[_Pending[ItemT, ResultT]], count: int) -> list[_Pending[ItemT, ResultT]]:
    return [queue.popleft() for _ in range(min(count, len(queue)))]


class DynamicBatcher(Generic[ItemT, ResultT]):
    """Gathers items from concurrent callers into batches for ``run_batch``.

    ``run_batch(items)`` must return one result per item, in order; it always
    runs on the batcher's own worker thread, one batch at a time.
    ``initializer`` runs once on that thread before any batch (per-thread
    state such as PyTorch's cuDNN plan cache is built where it is used); the
    constructor waits for it and re-raises its error. With
    ``enabled=False`` every item runs alone (batch size 1, no delay), which is
    the unbatched baseline benchmarks compare against. Foreground items go
    before background ones as the module docstring says; background items
    are refused beyond :data:`BACKGROUND_QUEUE_SHARE` of ``max_queue_size``
    (at least one) and promoted after ``max_background_wait_s``.
    """

    def __init__(
        self,
        run_batch: Callable[[list[ItemT]], Sequence[ResultT]],
        *,
        max_batch_size: int = 32,
        max_queue_delay_ms: float = 5.0,
        max_queue_size: int = 256,
        enabled: bool = True,
        name: str = "model",
        initializer: Callable[[], None] | None = None,
        max_background_wait_s: float = DEFAULT_MAX_BACKGROUND_WAIT_S,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_queue_delay_ms < 0 or max_background_wait_s < 0:
            raise ValueError(
                "max_batch_size and max_queue_size must be >= 1, max_queue_delay_ms and max_background_wait_s >= 0"
            )
        self.name = name
        self.max_batch_size = max_batch_size if enabled else 1
        self.max_queue_delay = max_queue_delay_ms / 1000 if enabled else 0.0
        self.max_queue_size = max_queue_size
        self.max_background_queue = max(1, int(max_queue_size * BACKGROUND_QUEUE_SHARE))
        self.max_background_wait = max_background_wait_s
        self._run_batch = run_batch
        # Two FIFO queues, so each is in order of arrival and the oldest
        # background item is always at the head of its queue.
        self._queue: deque[_Pending[ItemT, ResultT]] = deque()
        self._background: deque[_Pending[ItemT, ResultT]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches_run = 0
        self.items_run = 0
        self._depth = QUEUE_DEPTH.labels(name)
        self._background_depth = BACKGROUND_DEPTH.labels(name)
        self._initializer = initializer
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._worker = threading.Thread(target=self._work, name=f"{name}-batcher", daemon=True)
        self._worker.start()
        self._ready.wait()
        if self._init_error is not None:
            raise self._init_error

    # -- callers -------------------------------------------------------------

    def submit(self, item: ItemT, priority: Priority | None = None) -> Future[ResultT]:
        """Queues one item; the future resolves to its result. ``priority``
        defaults to the caller's :data:`call_priority`. Never blocks: raises
        Overloaded when the queue (or background's share of it) is full,
        Unavailable once closed."""
        return self.submit_many([item], priority)[0]

    def submit_many(self, items: Sequence[ItemT], priority: Priority | None = None) -> list[Future[ResultT]]:
        """Queues several items at once, all or none (a bulk request is not
        half-accepted). Raises like :meth:`submit`."""
        background = (priority or call_priority.get()) == BACKGROUND
        now = time.monotonic()
        pending = [_Pending[ItemT, ResultT](item, now) for item in items]
        with self._cond:
            if self._closed:
                raise Unavailable(f"the {self.name} is shutting down; retry on another replica", "shutting_down")
            queued = len(self._queue) + len(self._background)
            if queued + len(pending) > self.max_queue_size:
                REJECTED.labels(self.name).inc(len(pending))
                raise Overloaded(
                    f"the {self.name} is overloaded ({queued} images queued, limit {self.max_queue_size}); "
                    "retry shortly"
                )
            if background and len(self._background) + len(pending) > self.max_background_queue:
                REJECTED.labels(self.name).inc(len(pending))
                raise Overloaded(
                    f"the {self.name} is busy with background work ({len(self._background)} images queued, "
                    f"limit {self.max_background_queue}); retry shortly"
                )
            (self._background if background else self._queue).extend(pending)
            self._set_depth()
            self._cond.notify_all()
        return [p.future for p in pending]

    def run(self, item: ItemT, timeout: float | None = None, priority: Priority | None = None) -> ResultT:
        """Submits one item and blocks for its result (for thread-pool RPC
        handlers). Raises the batch's exception, or DeadlineExceeded after
        ``timeout`` seconds (the item is then dropped if not yet running)."""
        return self.wait([self.submit(item, priority)], timeout)[0]

    def run_many(
        self, items: Sequence[ItemT], timeout: float | None = None, priority: Priority | None = None
    ) -> list[ResultT]:
        """:meth:`submit_many`, then blocks for every result, in order."""
        return self.wait(self.submit_many(items, priority), timeout)

    def wait(self, futures: Sequence[Future[ResultT]], timeout: float | None = None) -> list[ResultT]:
        """The results of ``futures`` in order, within ``timeout`` seconds in
        total. On any failure the others are cancelled where not yet running."""
        if timeout is not None and timeout > _FOREVER:
            timeout = None  # gRPC reports "no deadline" as an enormous time remaining
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            results = []
            for future in futures:
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                results.append(future.result(remaining))
            return results
        except TimeoutError:
            raise DeadlineExceeded(f"the {self.name} did not finish within the call's deadline") from None
        finally:
            for future in futures:
                future.cancel()  # no-op for finished or running ones

    # -- lifecycle -----------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (new items are refused)."""
        return self._closed

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch, foreground and background."""
        with self._cond:
            return len(self._queue) + len(self._background)

    @property
    def background_depth(self) -> int:
        """Background items waiting for a batch."""
        with self._cond:
            return len(self._background)

    def _set_depth(self) -> None:
        self._depth.set(len(self._queue) + len(self._background))
        self._background_depth.set(len(self._background))

    def close(self, timeout: float | None = None) -> None:
        """Stops accepting items, finishes everything already queued, then
        stops the worker (waiting up to ``timeout`` seconds for it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)

    # -- worker --------------------------------------------------------------

    def _next_batch(self) -> list[_Pending[ItemT, ResultT]] | None:
        """Blocks until a batch is due; None once closed and drained."""
        with self._cond:
            while not self._queue and not self._background:
                if self._closed:
                    return None
                self._cond.wait()
            # The oldest item waits at most max_queue_delay for company. Items
            # that queued up while the previous batch ran are usually past it.
            oldest = min(q[0].enqueued for q in (self._queue, self._background) if q)
            deadline = oldest + self.max_queue_delay
            while len(self._queue) + len(self._background) < self.max_batch_size and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = self._pick(time.monotonic())
            self._set_depth()
        # Callers that gave up (timed out) before their item started are skipped.
        return [p for p in batch if p.future.set_running_or_notify_cancel()]

    def _pick(self, now: float) -> list[_Pending[ItemT, ResultT]]:
        """Takes the next batch off the queues (the lock held): background
        items past ``max_background_wait`` and foreground items, merged in
        order of arrival, then other background items in the room left."""
        room = self.max_batch_size
        overdue = now - self.max_background_wait
        batch: list[_Pending[ItemT, ResultT]] = []
        while len(batch) < room and self._background and self._background[0].enqueued <= overdue:
            if self._queue and self._queue[0].enqueued < self._background[0].enqueued:
                batch.append(self._queue.popleft())
            else:
                batch.append(self._background.popleft())
        batch += _take(self._queue, room - len(batch))
        batch += _take(self._background, room - len(batch))
        return batch

    def _work(self) -> None:
        try:
            if self._initializer is not None:
                self._initializer()
        except BaseException as exc:
            self._init_error = exc
            self._closed = True
            return
        finally:
            self._ready.set()
        while (batch := self._next_batch()) is not None:
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[_Pending[ItemT, ResultT]]) -> None:
        start = time.perf_counter()
        try:
            results = self._run_batch([p.item for p in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name} batch function returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            if not isinstance(exc, Overloaded | Unavailable | DeadlineExceeded):
                log.exception("%s batch of %d failed", self.name, len(batch))
            for p in batch:
                p.future.set_exception(exc)
        else:
            for p, result in zip(batch, results, strict=True):
                p.future.set_result(result)
        finally:
            self.batches_run += 1
            self.items_run += len(batch)
            BATCH_SIZE.labels(self.name).observe(len(batch))
            BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - start)
