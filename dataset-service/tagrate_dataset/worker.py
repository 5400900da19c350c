"""The background worker: one thread that drains the durable work queue
(``workqueue.py``), tagging new images through the tagger and caching their
feature vectors through the rater.

Each kind of work has its own lane, so a rater outage never holds up
tagging. A lane whose service cannot be reached backs off exponentially
(``work_backoff_initial_seconds`` doubling up to
``work_backoff_max_seconds``) and tries again by itself; the outage is
logged when it starts and when it ends, not at every attempt. Claimed work
goes back to the queue on any failure, so nothing is lost. An idle worker
looks for work every ``work_poll_seconds`` (other replicas enqueue too) and
at once when :meth:`BackgroundWorker.wake` is called after a new image.

The first time a lane reaches its service, and whenever the service runs a
model it has not seen before, it queues every image lacking that model's
result (``workqueue.enqueue_missing``): images stored before the queue
existed, and images tagged or embedded by an older model, are caught up.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from tagrate_common.errors import DeadlineExceeded, Overloaded, TagrateError, Unavailable

from . import workqueue
from .config import DatasetSettings
from .db import Database
from .imagework import ImageWork

log = logging.getLogger(__name__)

# Failures that mean "not now" rather than "something is wrong here".
_OUTAGES = (Unavailable, DeadlineExceeded, Overloaded)


@dataclass
class Backoff:
    """When a failing lane may try again: ``initial`` seconds after the
    first failure, doubling up to ``maximum``."""

    initial: float
    maximum: float
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic()

    def failed(self, now: float) -> None:
        self.failures += 1
        # The exponent is capped: a days-long outage must not overflow a float.
        self.retry_at = now + min(self.maximum, self.initial * 2 ** min(self.failures - 1, 32))

    def succeeded(self) -> None:
        self.failures, self.retry_at = 0, 0.0


@dataclass
class Lane:
    work: ImageWork[Any, Any]
    backoff: Backoff
    # The model key whose missing results were last queued (None: not yet).
    swept_key: str | None = None


class BackgroundWorker:
    """Drains the work queue on a daemon thread until :meth:`stop`."""

    def __init__(self, settings: DatasetSettings, db: Database, works: list[ImageWork[Any, Any]]) -> None:
        self.db = db
        self.poll_seconds = settings.work_poll_seconds
        self.lease_seconds = settings.work_lease_seconds
        self.stop_timeout = max(1.0, settings.shutdown_grace_seconds)
        self.lanes = []
        for work in works:
            if work.configured:
                backoff = Backoff(settings.work_backoff_initial_seconds, settings.work_backoff_max_seconds)
                self.lanes.append(Lane(work, backoff))
            else:
                log.warning(
                    "no %s is configured: new images wait in the work queue for %s work until one is",
                    work.service,
                    work.kind,
                )
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dataset-worker", daemon=True)

    def start(self) -> None:
        if self.lanes:
            self._thread.start()

    def wake(self) -> None:
        """Look for work now (a new image was stored)."""
        self._wake.set()

    def stop(self) -> None:
        """Finishes the batch in hand (or gives up waiting after the shutdown
        grace period; its claimed work returns to the queue when the lease
        runs out) and stops the thread."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                log.warning("the background worker is still waiting on a call; leaving it behind")

    # ---- the thread ----

    def _run(self) -> None:
        log.info("background worker started", extra={"lanes": ",".join(lane.work.kind for lane in self.lanes)})
        while not self._stopping.is_set():
            self._wake.clear()
            busy = False
            for lane in self.lanes:
                if self._stopping.is_set():
                    break
                if time.monotonic() < lane.backoff.retry_at:
                    continue
                busy |= self._attempt(lane)
            if busy:
                continue
            now = time.monotonic()
            retries = [lane.backoff.retry_at - now for lane in self.lanes if lane.backoff.failures]
            self._wake.wait(max(0.0, min([self.poll_seconds, *retries])))
        log.info("background worker stopped")

    def _attempt(self, lane: Lane) -> bool:
        """One step of ``lane``; True when it handled work (so there may be more)."""
        try:
            handled = self.step(lane)
        except Exception as exc:  # the thread must outlive any failure
            lane.backoff.failed(time.monotonic())
            if lane.backoff.failures == 1:
                self._outage_started(lane, exc)
            return False
        if lane.backoff.failures:
            log.info(
                "background %s work resumed: the %s answers again after %d failed attempts",
                lane.work.kind,
                lane.work.service,
                lane.backoff.failures,
            )
        lane.backoff.succeeded()
        return handled > 0

    def _outage_started(self, lane: Lane, exc: Exception) -> None:
        if isinstance(exc, _OUTAGES):
            log.warning(
                "background %s work paused: %s; retrying with backoff (up to %.0fs apart), nothing is lost",
                lane.work.kind,
                exc,
                lane.backoff.maximum,
            )
        elif isinstance(exc, TagrateError):
            log.error("background %s work failed: %s; retrying with backoff", lane.work.kind, exc)
        else:
            log.exception("background %s work failed unexpectedly; retrying with backoff", lane.work.kind)

    def step(self, lane: Lane) -> int:
        """Claims and processes one batch of ``lane``'s work; returns how many
        items it handled (0: nothing was due)."""
        work = lane.work
        with self.db.read() as session:
            due = workqueue.has_due(session, work.kind)
        if not due and lane.swept_key is not None:
            return 0  # idle: no call to the model service at all
        model = work.current_model()
        key = work.model_key(model)
        if key != lane.swept_key:
            queued = self.db.write(lambda session: workqueue.enqueue_missing(session, work.kind, key))
            if queued:
                log.info("queued %d images for %s work by %s", queued, work.kind, key)
            lane.swept_key = key
        claimed = self.db.write(
            lambda session: workqueue.claim(session, work.kind, work.batch_size, self.lease_seconds, key)
        )
        if not claimed.images:
            return len(claimed)
        try:
            outcome = work.process(model, claimed.images)
        except BaseException:
            self._release(lane, [image.image_id for image in claimed.images])
            raise
        log.info(
            "background %s work done",
            work.kind,
            extra={"model": key, "images": len(outcome.results), "refused": len(outcome.refused)},
        )
        return len(claimed)

    def _release(self, lane: Lane, image_ids: list[int]) -> None:
        try:
            self.db.write(lambda session: workqueue.release(session, lane.work.kind, image_ids))
        except Exception:
            # The database is down too: the lease runs out on its own.
            log.warning("could not hand back claimed %s work; it is due again when its lease ends", lane.work.kind)
