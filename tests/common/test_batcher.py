"""DynamicBatcher: batches form, every caller gets its own answer, the queue
is bounded, errors and shutdown behave, foreground items go before
background ones without starving them. The batch functions here are plain
Python so the tests are about the batcher alone; a "gate" holds the worker
inside a batch so queue states are exact instead of timing-dependent."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tagrate_common.batcher import BACKGROUND, FOREGROUND, DynamicBatcher, call_priority
from tagrate_common.errors import DeadlineExceeded, Overloaded, Unavailable

WAIT = 10.0  # generous bound on waits that only fail when something is broken


class GatedSquares:
    """A batch function returning x*x that records every batch and can hold
    the worker inside the first batch until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.add(threading.current_thread().name)
        self.started.set()
        assert self.release.wait(WAIT)
        if any(x < 0 for x in items):
            raise ValueError(f"negative item in {items}")
        return [x * x for x in items]


@pytest.fixture
def closing():
    batchers: list[DynamicBatcher] = []

    def track(batcher: DynamicBatcher) -> DynamicBatcher:
        batchers.append(batcher)
        return batcher

    yield track
    for b in batchers:
        b.close(WAIT)


def test_concurrent_callers_get_the_same_results_as_one_by_one(closing) -> None:
    fn = GatedSquares()
    batcher = closing(DynamicBatcher(fn, max_batch_size=8, max_queue_delay_ms=20))
    one_by_one = [batcher.run(i, WAIT) for i in range(40)]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda i: batcher.run(i, WAIT), range(40)))
    assert concurrent == one_by_one == [i * i for i in range(40)]
    assert sum(len(b) for b in fn.batches) == 80
    assert all(len(b) <= 8 for b in fn.batches)


def test_items_queued_while_a_batch_runs_form_one_batch(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=10, max_queue_delay_ms=1))
    first = batcher.submit(100)
    assert fn.started.wait(WAIT)  # the worker holds [100]
    rest = [batcher.submit(i) for i in range(10)]
    assert batcher.queue_depth == 10
    fn.release.set()
    assert batcher.wait([first, *rest], WAIT) == [10_000, *[i * i for i in range(10)]]
    assert fn.batches == [[100], list(range(10))]
    assert batcher.batches_run == 2 and batcher.items_run == 11


def test_the_queue_delay_gathers_separate_submits(closing) -> None:
    fn = GatedSquares()
    batcher = closing(DynamicBatcher(fn, max_batch_size=5, max_queue_delay_ms=30_000))
    futures = [batcher.submit(i) for i in range(5)]
    assert batcher.wait(futures, WAIT) == [0, 1, 4, 9, 16]
    assert fn.batches == [[0, 1, 2, 3, 4]]


def test_batches_never_exceed_the_max_size(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=4, max_queue_delay_ms=1))
    first = batcher.submit(0)
    assert fn.started.wait(WAIT)
    rest = batcher.submit_many(list(range(1, 11)))
    fn.release.set()
    batcher.wait([first, *rest], WAIT)
    assert fn.batches == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]


def test_the_batch_runs_on_the_worker_thread(closing) -> None:
    fn = GatedSquares()
    batcher = closing(DynamicBatcher(fn, name="squares"))
    batcher.run(3, WAIT)
    assert fn.threads == {"squares-batcher"}
    assert threading.current_thread().name not in fn.threads


def test_a_full_queue_refuses_at_once(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=2, max_queue_size=3, name="tagger"))
    running = batcher.submit(1)
    assert fn.started.wait(WAIT)
    queued = [batcher.submit(i) for i in (2, 3, 4)]
    with pytest.raises(Overloaded) as refused:
        batcher.submit(5)  # would hang here if the queue were unbounded-blocking
    assert "tagger is overloaded" in refused.value.message
    assert refused.value.grpc_status.name == "RESOURCE_EXHAUSTED"
    with pytest.raises(Overloaded):
        batcher.run(6, timeout=WAIT)
    # A bulk submit is all or nothing: nothing of it is queued.
    with pytest.raises(Overloaded):
        batcher.submit_many([7, 8])
    assert batcher.queue_depth == 3
    fn.release.set()
    assert batcher.wait([running, *queued], WAIT) == [1, 4, 9, 16]
    assert batcher.run(6, WAIT) == 36  # room again


def test_a_failing_batch_fails_only_its_own_callers(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=2, max_queue_delay_ms=1))
    first = batcher.submit(1)
    assert fn.started.wait(WAIT)
    doomed = batcher.submit_many([-1, 2])  # one batch, one bad item
    fine = batcher.submit_many([3, 4])
    fn.release.set()
    assert first.result(WAIT) == 1
    for future in doomed:
        with pytest.raises(ValueError, match="negative item"):
            future.result(WAIT)
    assert batcher.wait(fine, WAIT) == [9, 16]
    assert batcher.run(5, WAIT) == 25  # the worker survived


def test_a_batch_function_returning_the_wrong_count_fails_its_callers(closing) -> None:
    batcher = closing(DynamicBatcher(lambda items: items[:-1], max_batch_size=4, max_queue_delay_ms=60_000))
    futures = batcher.submit_many([1, 2, 3, 4])
    for future in futures:
        with pytest.raises(RuntimeError, match="returned 3 results for 4 items"):
            future.result(WAIT)


def test_disabled_batching_runs_every_item_alone(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=32, max_queue_delay_ms=1000, enabled=False))
    first = batcher.submit(0)
    assert fn.started.wait(WAIT)
    rest = batcher.submit_many([1, 2, 3])
    fn.release.set()
    assert batcher.wait([first, *rest], WAIT) == [0, 1, 4, 9]
    assert fn.batches == [[0], [1], [2], [3]]


def test_a_caller_that_times_out_is_dropped_from_the_batch(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=8, max_queue_delay_ms=1))
    first = batcher.submit(1)
    assert fn.started.wait(WAIT)
    with pytest.raises(DeadlineExceeded):
        batcher.run(99, timeout=0.05)
    kept = batcher.submit(2)
    fn.release.set()
    assert batcher.wait([first, kept], WAIT) == [1, 4]
    assert [99] not in fn.batches and all(99 not in b for b in fn.batches)


def test_close_finishes_queued_work_and_refuses_new_items() -> None:
    fn = GatedSquares(hold_first=True)
    batcher = DynamicBatcher(fn, max_batch_size=2, max_queue_delay_ms=1, name="closing")
    first = batcher.submit(1)
    assert fn.started.wait(WAIT)
    queued = batcher.submit_many([2, 3, 4])
    closer = threading.Thread(target=batcher.close, args=(WAIT,))
    closer.start()
    # close() has to be waiting for the held batch before new work is refused.
    for _ in range(1000):
        if batcher.closed:
            break
        threading.Event().wait(0.005)
    with pytest.raises(Unavailable, match="shutting down"):
        batcher.submit(5)
    fn.release.set()
    closer.join(WAIT)
    assert not closer.is_alive()
    assert [f.result(0) for f in [first, *queued]] == [1, 4, 9, 16]
    assert "closing-batcher" not in {t.name for t in threading.enumerate()}


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda items: items, max_batch_size=0)
    with pytest.raises(ValueError):
        DynamicBatcher(lambda items: items, max_queue_size=0)


def test_the_initializer_runs_on_the_worker_before_any_batch(closing) -> None:
    events: list[tuple[str, str]] = []

    def initializer() -> None:
        events.append(("init", threading.current_thread().name))

    def run_batch(items: list[int]) -> list[int]:
        events.append(("batch", threading.current_thread().name))
        return items

    batcher = closing(DynamicBatcher(run_batch, name="warm", initializer=initializer))
    assert events == [("init", "warm-batcher")]  # done before the constructor returned
    assert batcher.run(7, WAIT) == 7
    assert events == [("init", "warm-batcher"), ("batch", "warm-batcher")]


def test_a_failing_initializer_fails_the_constructor() -> None:
    def initializer() -> None:
        raise RuntimeError("no such model")

    with pytest.raises(RuntimeError, match="no such model"):
        DynamicBatcher(lambda items: items, name="broken", initializer=initializer)
    assert "broken-batcher" not in {t.name for t in threading.enumerate()}


# ---- foreground before background ----


def test_foreground_items_go_before_queued_background_ones(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=3, max_queue_delay_ms=1))
    first = batcher.submit(0)
    assert fn.started.wait(WAIT)
    flood = batcher.submit_many([10, 11, 12, 13, 14, 15, 16], BACKGROUND)
    interactive = batcher.submit_many([1, 2], FOREGROUND)
    assert batcher.queue_depth == 9 and batcher.background_depth == 7
    fn.release.set()
    assert batcher.wait([first, *interactive, *flood], WAIT)[:3] == [0, 1, 4]
    # The next batch after the running one: both foreground items, the room
    # left filled with the oldest background item; then background in order.
    assert fn.batches == [[0], [1, 2, 10], [11, 12, 13], [14, 15, 16]]


def test_a_foreground_item_arriving_behind_a_backlog_runs_in_the_next_batch(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=4, max_queue_delay_ms=1))
    first = batcher.submit(0, BACKGROUND)
    assert fn.started.wait(WAIT)
    flood = batcher.submit_many(list(range(100, 140)), BACKGROUND)
    late = batcher.submit(7)  # foreground by default
    fn.release.set()
    assert late.result(WAIT) == 49
    batcher.wait([first, *flood], WAIT)
    assert fn.batches[1] == [7, 100, 101, 102]
    assert [x for b in fn.batches for x in b] == [0, 7, *range(100, 140)]


def test_the_callers_priority_comes_from_the_context(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=2, max_queue_delay_ms=1))
    first = batcher.submit(0)
    assert fn.started.wait(WAIT)
    token = call_priority.set(BACKGROUND)
    try:
        background = batcher.submit_many([10, 11])  # as a background RPC's handler thread would
    finally:
        call_priority.reset(token)
    foreground = batcher.submit(1)
    assert batcher.background_depth == 2
    fn.release.set()
    batcher.wait([first, foreground, *background], WAIT)
    assert fn.batches == [[0], [1, 10], [11]]


def test_background_waiting_longer_than_the_limit_is_served_in_order_of_arrival(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=2, max_queue_delay_ms=0, max_background_wait_s=0.2))
    first = batcher.submit(0)
    assert fn.started.wait(WAIT)
    old = batcher.submit_many([10, 11, 12], BACKGROUND)
    threading.Event().wait(0.3)  # the background items are now overdue
    newer = batcher.submit_many([1, 2, 3])
    fn.release.set()
    batcher.wait([first, *old, *newer], WAIT)
    # Overdue background items count as foreground that arrived when they did:
    # before the newer foreground items, instead of after all of them.
    assert fn.batches == [[0], [10, 11], [12, 1], [2, 3]]


def test_a_steady_foreground_load_does_not_starve_background_work(closing) -> None:
    batcher = closing(
        DynamicBatcher(lambda items: [threading.Event().wait(0.002) or x for x in items], max_batch_size=2,
                       max_queue_delay_ms=0, max_background_wait_s=0.1)
    )  # fmt: skip
    stop = threading.Event()

    def interactive() -> None:
        while not stop.is_set():
            batcher.run_many([1, 2, 3, 4], WAIT)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(4):
            pool.submit(interactive)
        try:
            threading.Event().wait(0.1)  # the queue always holds foreground items now
            assert batcher.run(5, WAIT, BACKGROUND) == 5
        finally:
            stop.set()


def test_background_items_may_fill_only_part_of_the_queue(closing) -> None:
    fn = GatedSquares(hold_first=True)
    batcher = closing(DynamicBatcher(fn, max_batch_size=2, max_queue_size=8, name="tagger"))
    running = batcher.submit(0)
    assert fn.started.wait(WAIT)
    assert batcher.max_background_queue == 6
    background = batcher.submit_many([10, 11, 12, 13, 14], BACKGROUND)
    with pytest.raises(Overloaded) as refused:
        batcher.submit_many([15, 16], BACKGROUND)  # all or none: 7 > 6
    assert "background" in refused.value.message
    assert refused.value.grpc_status.name == "RESOURCE_EXHAUSTED"
    background.append(batcher.submit(15, BACKGROUND))
    with pytest.raises(Overloaded):
        batcher.submit(16, BACKGROUND)
    foreground = batcher.submit_many([1, 2])  # the room kept for interactive calls
    with pytest.raises(Overloaded):
        batcher.submit(3)  # the queue as a whole is full
    fn.release.set()
    assert batcher.wait([running, *foreground, *background], WAIT) == [0, 1, 4, *[x * x for x in range(10, 16)]]


def test_a_tiny_queue_still_takes_one_background_item(closing) -> None:
    fn = GatedSquares()
    batcher = closing(DynamicBatcher(fn, max_queue_size=1))
    assert batcher.max_background_queue == 1
    assert batcher.run(3, WAIT, BACKGROUND) == 9
