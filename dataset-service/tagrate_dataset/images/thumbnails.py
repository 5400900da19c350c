"""Thumbnails made ahead of the first request: when a new image is stored,
its default-size square thumbnail (the size the original web front end's
grid asks for) is generated on a background thread, so /getthumbnail of a
stored image is a read of the disk cache. Other sizes are still generated on
their first request (:meth:`BlobStore.thumbnail`).

Not durable, on purpose: a thumbnail that was queued when the process
stopped is generated on its first request instead, which is what happened
to every thumbnail before. One thread, started when there is something to
do and gone when the queue is empty; each generation takes a decode slot
like any other, so the memory bound of decoding holds. Before each one the
thread waits its turn at the process's
:class:`~tagrate_dataset.work.pacing.YieldGate`: while requests are short of CPU
(an import at full speed) thumbnails wait, and catch up once they ease off.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from ..work import pacing
from ..work.pacing import YieldGate

log = logging.getLogger(__name__)

# Most images waiting for their thumbnail. Past it new ones are left to
# their first request: a bulk upload larger than this must not grow memory
# without bound, and the cost of a miss is one on-demand generation.
MAX_PENDING = 10_000


class ThumbnailWarmer:
    """Runs ``generate(name)`` for each submitted image name, one at a time
    on a background thread, oldest first."""

    def __init__(
        self, generate: Callable[[str], None], max_pending: int = MAX_PENDING, gate: YieldGate | None = None
    ) -> None:
        self._generate = generate
        self._gate = gate or pacing.shared_gate()
        self._max_pending = max_pending
        self._pending: deque[str] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._running = False

    def submit(self, name: str) -> None:
        """Queues ``name``; never blocks on the generation."""
        with self._lock:
            if len(self._pending) >= self._max_pending:
                log.debug("thumbnail queue full; %s is generated on its first request", name)
                return
            self._pending.append(name)
            if not self._running:
                self._running = True
                threading.Thread(target=self._drain, name="thumbnail-warmer", daemon=True).start()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Waits until nothing is queued or being generated; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._running, timeout)

    def _drain(self) -> None:
        with self._gate.background():
            self._drain_queue()

    def _drain_queue(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._running = False
                    self._idle.notify_all()
                    return
                name = self._pending.popleft()
            self._gate.wait_turn()  # requests short of CPU go first
            try:
                self._generate(name)
            except FileNotFoundError:
                pass  # deleted since it was stored: nothing to make
            except Exception:  # the thread must outlive any one image
                log.warning("could not generate the thumbnail of %s ahead of time", name, exc_info=True)
