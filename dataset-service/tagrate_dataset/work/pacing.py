"""Background work that steps aside while foreground requests are short of
CPU: the thumbnail warmer (``images/thumbnails.py``) and the background
worker's tagging and feature extraction (``worker.py``) each wait for their turn
(:meth:`YieldGate.wait_turn`) before a unit of work.

Why: an import uploads as fast as the server takes it, and every new image
queues a thumbnail, a tagging pass and a feature vector, about as much CPU
again as the upload itself. Done at once, that backlog competes with the
import that creates it; deferred, the import finishes sooner and the
backlog drains right after, as fast as before. Nothing is lost either way:
the work queue is durable, and a thumbnail not made ahead is made on its
first request.

How it tells: Linux counts, for every thread, the time it spent runnable but
waiting for a core (the second field of ``/proc/self/task/<tid>/schedstat``).
The gate sums that wait over this process's threads other than the
background ones (request handlers, chiefly) and divides by the wall time:
the *foreground pressure*, in cores. While it is at or above ``threshold``
(default one core: more foreground work wants the CPU than a whole core's
worth) the requests are short of CPU, and background work waits,
re-checking every ``window`` seconds. One request at a time (a sequential
uploader, a person clicking) seldom gets there, so its backlog is worked off
alongside it as before; concurrent uploads can (``bench import``: median
about 1.9 cores during ``tagrate import -j 8``, 0.1 while the backlog
drains, 0.8 under a sequential loop on a machine loaded by other work).
Waiting in the database, on the disk or for the GIL is not counted: only a
lack of CPU.

Background work never starves: after waiting ``max_defer_seconds`` in one
go it does one unit anyway (one thumbnail, one batch), then waits again.
Where the counters cannot be read (not Linux), or with ``max_defer_seconds``
0, nothing waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TASKS = Path("/proc/self/task")
# Foreground threads waiting for a core this much of the time (in cores,
# summed over threads) mean the requests are short of CPU: more than one
# request at a time wants it (see the module docstring).
DEFAULT_THRESHOLD = 1.0
# How long one measurement of the pressure spans, and how often a waiting
# background thread looks again.
DEFAULT_WINDOW = 0.1
# A measurement older than this says nothing about now: a fresh one is taken.
_STALE = 1.0


def read_waits(tasks: Path = TASKS) -> dict[int, int] | None:
    """Each thread's time spent waiting for a core so far (ns), by thread id;
    None when the counters cannot be read."""
    waits = {}
    try:
        names = os.listdir(tasks)
    except OSError:
        return None
    for name in names:
        try:
            fields = (tasks / name / "schedstat").read_text().split()
            waits[int(name)] = int(fields[1])
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        except (OSError, ValueError, IndexError):
            return None
    return waits


def _waited(before: dict[int, int], now: dict[int, int], background: set[int]) -> float:
    """Seconds the threads not in ``background`` waited for a core between
    two readings. A thread that started since (or whose id was reused) has
    waited only since then."""
    total = 0
    for tid, wait in now.items():
        if tid not in background:
            previous = before.get(tid, 0)
            total += wait - previous if wait >= previous else wait
    return total / 1e9


class YieldGate:
    """Makes background threads wait while this process's other threads
    are short of CPU (see the module docstring). Thread-safe."""

    def __init__(
        self,
        max_defer_seconds: float,
        threshold: float = DEFAULT_THRESHOLD,
        window: float = DEFAULT_WINDOW,
        read: Callable[[], dict[int, int] | None] = read_waits,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_defer_seconds = max_defer_seconds
        self.threshold = threshold
        self.window = window
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._background: set[int] = set()
        self._sample: tuple[float, dict[int, int]] | None = None
        self._pressure = 0.0
        self._window = 0.0  # the last window's own figure
        self._measured_at = -1.0  # when the window ``_pressure`` covers ended
        self._available = read() is not None
        self.deferred_seconds = 0.0  # in all, for tests and logs

    @property
    def enabled(self) -> bool:
        return self._available and self.max_defer_seconds > 0

    @contextlib.contextmanager
    def background(self) -> Iterator[None]:
        """Marks the calling thread as background while inside: its own
        waits for a core are not foreground pressure."""
        tid = threading.get_native_id()
        with self._lock:
            self._background.add(tid)
        try:
            yield
        finally:
            with self._lock:
                self._background.discard(tid)

    def pressure(self) -> float | None:
        """Foreground threads' wait for a core per second of wall time, over
        the last ``window`` seconds at least (blocks up to that long when the
        last measurement is stale), or over the window before it when that
        was higher; None when the counters cannot be read."""
        while True:
            with self._lock:
                now = self._clock()
                if self._sample is None or now - self._sample[0] > _STALE:
                    waits = self._read()
                    if waits is None:
                        return None
                    self._sample = (now, waits)
                    delay = self.window
                else:
                    then, before = self._sample
                    if now - then >= self.window:
                        waits = self._read()
                        if waits is None:
                            return None
                        self._sample = (now, waits)
                        pressure = _waited(before, waits, self._background) / (now - then)
                        # The higher of this window and the one right before it:
                        # one lull in a busy stretch is no reason to start.
                        previous = self._window if self._measured_at == then else 0.0
                        self._window, self._pressure = pressure, max(pressure, previous)
                        self._measured_at = now
                        return self._pressure
                    if self._measured_at == then:
                        return self._pressure  # the window that ended just now
                    delay = then + self.window - now  # a measurement is under way
            time.sleep(delay)

    def wait_turn(self, stop: threading.Event | None = None) -> float:
        """Waits while foreground requests are short of CPU, at most
        ``max_defer_seconds`` (or until ``stop`` is set); returns the seconds
        waited."""
        if not self.enabled:
            return 0.0
        start = self._clock()
        while True:
            pressure = self.pressure()
            waited = self._clock() - start
            if pressure is None or pressure < self.threshold or waited >= self.max_defer_seconds:
                break
            if stop is None:
                time.sleep(self.window)
            elif stop.wait(self.window):
                break
        if waited >= self.window:
            with self._lock:
                self.deferred_seconds += waited
            log.debug("background work waited %.1fs for foreground requests", waited)
        return waited


_shared = YieldGate(0.0)
_shared_lock = threading.Lock()


def shared_gate() -> YieldGate:
    """The gate every background thread of this process waits at."""
    return _shared


def configure(max_defer_seconds: float, threshold: float = DEFAULT_THRESHOLD) -> YieldGate:
    """Sets the shared gate's limits (the background worker does, from its
    settings, before anything waits at it) and returns it."""
    with _shared_lock:
        _shared.max_defer_seconds = max_defer_seconds
        _shared.threshold = threshold
    return _shared
