"""Background work yields to foreground requests short of CPU (pacing.py),
measured with Linux's real per-thread counters: threads of this process
that keep more cores busy than the machine has make the gate close; the
thumbnail warmer and the background worker (against a real tagger) then
wait, never longer than their limit, and catch up with everything once the
load is gone."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytest

from tagrate_dataset.images.thumbnails import ThumbnailWarmer
from tagrate_dataset.work import pacing
from tagrate_dataset.work.pacing import YieldGate
from tests.dataset.peers import add_rating, dataset_service, images, tagged, wait_for

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or pacing.read_waits() is None, reason="needs Linux's schedstat counters"
)
_BLOCK = os.urandom(4 << 20)


def _cores() -> int:
    return len(os.sched_getaffinity(0))


@contextmanager
def cpu_hogs(gate: YieldGate | None = None, count: int | None = None) -> Iterator[None]:
    """More threads than cores, each hashing without the GIL (so all of them
    want a core at once); with ``gate``, marked as its background threads."""
    stop = threading.Event()

    def hog() -> None:
        with gate.background() if gate is not None else nullcontext():
            while not stop.is_set():
                hashlib.sha256(_BLOCK).digest()

    threads = [threading.Thread(target=hog, daemon=True) for _ in range(count or 2 * _cores() + 2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def steady_pressure(gate: YieldGate, samples: int = 5) -> float:
    values = []
    for _ in range(samples):
        time.sleep(gate.window)
        pressure = gate.pressure()
        assert pressure is not None
        values.append(pressure)
    return sorted(values)[len(values) // 2]


def test_pressure_is_foreground_threads_waiting_for_a_core() -> None:
    gate = YieldGate(max_defer_seconds=5)
    assert gate.enabled
    assert steady_pressure(gate) < gate.threshold  # nothing of ours wants the CPU
    with cpu_hogs():
        # About (threads - cores) threads wait at any time.
        assert steady_pressure(gate) > gate.threshold >= 1.0
    # The same load on background threads is not foreground pressure.
    with cpu_hogs(gate):
        assert steady_pressure(gate) < gate.threshold


def test_wait_turn_waits_while_foreground_is_short_of_cpu_but_never_longer_than_its_limit() -> None:
    gate = YieldGate(max_defer_seconds=0.6)
    assert gate.wait_turn() < gate.window * 2  # no load: at once (at most one measurement)
    with cpu_hogs():
        start = time.monotonic()
        waited = gate.wait_turn()
        assert 0.6 <= waited <= time.monotonic() - start < 3
        stop = threading.Event()
        threading.Timer(0.2, stop.set).start()
        assert gate.wait_turn(stop) < 0.6  # stopping ends the wait
    assert gate.wait_turn() < gate.window * 4  # two quiet windows once the load is gone
    assert YieldGate(max_defer_seconds=0).wait_turn() == 0.0  # 0: never waits


def test_the_thumbnail_warmer_waits_for_a_busy_cpu_then_catches_up_with_everything() -> None:
    gate = YieldGate(max_defer_seconds=30)
    made: list[str] = []
    warmer = ThumbnailWarmer(made.append, gate=gate)
    with cpu_hogs():
        for name in ("a", "b", "c"):
            warmer.submit(name)
        time.sleep(1.5)
        assert made == []  # deferred while the foreground needs the CPU
    assert warmer.wait_idle(15)
    assert made == ["a", "b", "c"]  # nothing lost, in order


def test_the_thumbnail_warmer_never_starves() -> None:
    gate = YieldGate(max_defer_seconds=0.3)
    made: list[str] = []
    warmer = ThumbnailWarmer(made.append, gate=gate)
    with cpu_hogs():
        for name in ("a", "b", "c"):
            warmer.submit(name)
        assert warmer.wait_idle(10)  # one thumbnail per 0.3 s at the least
        assert made == ["a", "b", "c"]


def test_background_tagging_waits_for_busy_requests_and_drains_after(
    tmp_path: Path, database_url: str, tagger_addr: str
) -> None:
    """The dataset service runs in this process: the hogs are its foreground.
    Images stored meanwhile are not tagged until the load is gone (well
    within the yield limit), then all of them are."""
    options = {"tagger_addr": tagger_addr, "background_yield_seconds": 60.0}
    with dataset_service(tmp_path, database_url, **options) as (served, server):
        assert server.worker is not None and server.worker.gate.max_defer_seconds == 60.0
        with cpu_hogs():
            names = [add_rating(served, "alice", data) for data in images(3, start=300)]
            time.sleep(2.0)
            assert not any(tagged(served, name) for name in names)
        for name in names:
            wait_for(f"{name} to be tagged", lambda name=name: tagged(served, name))
