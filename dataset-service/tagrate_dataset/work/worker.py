"""The background worker: one thread that drains the durable work queue
(``queue.py``), tagging new images through the tagger and caching their
feature vectors through the rater.

Each kind of work has its own lane, so a rater outage never holds up
tagging. A lane whose service cannot be reached backs off exponentially
(``work_backoff_initial_seconds`` doubling up to
``work_backoff_max_seconds``) and tries again by itself; the outage is
logged when it starts and when it ends, not at every attempt. Claimed work
goes back to the queue on any failure, so nothing is lost. An idle worker
looks for work every ``work_poll_seconds`` (other replicas enqueue too) and
at once when :meth:`BackgroundWorker.wake` is called after a new image.

Poison images: when the model call itself fails (an error from the service,
its deadline passing, or the service dying during the call although it
answered just before), the batch's items are charged an attempt and given
back with their own backoff (``work_retry_seconds``, doubling); from then on
each is claimed alone, so the images around a poison one go through, and
after ``work_max_attempts`` it is parked as failed with the error (see
``queue.py``). A service that is down before the call, busy
(RESOURCE_EXHAUSTED) or swapping its model charges nothing: that is an
outage, which only the lane's backoff handles.

Logging: each batch is logged at DEBUG; at INFO, a summary per lane of the
work done, at most every ``work_log_summary_seconds`` (the first one at
once, and the last one at most that long after the queue ran dry: new
images trickling in one by one would otherwise get a line each), plus a line
per failed attempt and per parked item.

One pass per new image: when the tagger runs the rater's backbone (its
``features_id`` is the rater's extractor id, see ``tags/tagging.py``), the tag
lane stores each image's vector from the tagging pass and completes its
embed work in the same transaction. The embed lane then leaves images whose
tag work is due to it, and embeds through the rater only the rest: images
whose tagging failed or was refused, or all of them while the tag lane backs
off. The tag lane's attempts, backoff and parking apply to the combined step
unchanged; embed work is charged only for the rater's own calls.

Yielding: before each batch the worker waits its turn at the process's
:class:`~tagrate_dataset.work.pacing.YieldGate`, so while requests are short of
CPU (an import at full speed) the backlog it creates waits, at most
``background_yield_seconds`` per batch, and drains once they ease off.

The first time a lane reaches its service, and whenever the service runs a
model it has not seen before, it queues every image lacking that model's
result (``workqueue.enqueue_missing``): images stored before the queue
existed, and images tagged or embedded by an older model, are caught up. An
idle lane asks its service for its model every ``work_model_check_seconds``,
so a tagger switched to another model (``tagrate models use``) has every
stored image re-tagged without waiting for a new image.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from tagrate_common.errors import DeadlineExceeded, Overloaded, TagrateError, Unavailable

from ..config import DatasetSettings
from ..db import Database
from ..peers import ModelChanged
from ..tags.tagging import Tagging
from . import pacing
from . import queue as workqueue
from .imagework import ImageWork

log = logging.getLogger(__name__)

# Failures that mean "not now" rather than "something is wrong here".
_OUTAGES = (Unavailable, DeadlineExceeded, Overloaded)
# Failures of a model call that do not blame the images in it.
_UNCHARGED = (Overloaded, ModelChanged)


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
    # When an idle lane last asked its service which model it runs.
    checked_at: float = -math.inf
    # Since the last INFO summary: images done, refused, failed (to be tried
    # again) and parked.
    done: int = 0
    refused: int = 0
    retried: int = 0
    parked: int = 0

    def tally(self) -> dict[str, int]:
        return {"images": self.done, "refused": self.refused, "retrying": self.retried, "parked": self.parked}


class BackgroundWorker:
    """Drains the work queue on a daemon thread until :meth:`stop`."""

    def __init__(self, settings: DatasetSettings, db: Database, works: list[ImageWork[Any, Any]]) -> None:
        self.db = db
        self.poll_seconds = settings.work_poll_seconds
        self.model_check_seconds = settings.work_model_check_seconds
        self.lease_seconds = settings.work_lease_seconds
        self.max_attempts = settings.work_max_attempts
        self.retry_seconds = settings.work_retry_seconds
        self.summary_seconds = settings.work_log_summary_seconds
        self._summarised_at = -math.inf
        self.gate = pacing.configure(settings.background_yield_seconds)
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
        with self.gate.background():
            self._loop()
        self._summarise(final=True)
        log.info("background worker stopped")

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            busy = False
            for lane in self.lanes:
                if self._stopping.is_set():
                    break
                if time.monotonic() < lane.backoff.retry_at:
                    continue
                busy |= self._attempt(lane)
            self._summarise()
            if busy:
                continue
            now = time.monotonic()
            retries = [lane.backoff.retry_at - now for lane in self.lanes if lane.backoff.failures]
            self._wake.wait(max(0.0, min([self.poll_seconds, *retries])))

    def _summarise(self, final: bool = False) -> None:
        """One INFO line per lane that did anything since the last one, once
        ``summary_seconds`` passed since then (or the worker stops): not a
        line per batch."""
        lanes = [lane for lane in self.lanes if any(lane.tally().values())]
        now = time.monotonic()
        if not lanes or (not final and now - self._summarised_at < self.summary_seconds):
            return
        self._summarised_at = now
        for lane in lanes:
            log.info("background %s work done", lane.work.kind, extra={**lane.tally(), "model": lane.swept_key})
            lane.done = lane.refused = lane.retried = lane.parked = 0

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
        if not due and lane.swept_key is not None and not self._model_changed(lane):
            return 0  # idle: at most a model check every model_check_seconds
        if lane.swept_key is not None and self._fed_by_tagging(lane, lane.swept_key):
            return 0  # the tag lane's pass gives these vectors
        self.gate.wait_turn(self._stopping)  # requests short of CPU go first
        if self._stopping.is_set():
            return 0
        model = work.current_model()
        key = work.model_key(model)
        if key != lane.swept_key:

            def sweep(session: Session) -> int:
                work.model_seen(session, model)
                return workqueue.enqueue_missing(session, work.kind, key)

            queued = self.db.write(sweep)
            if queued:
                log.info("queued %d images for %s work by %s", queued, work.kind, key)
            lane.swept_key = key
            if self._fed_by_tagging(lane, key):
                return 0
        claimed = self.db.write(
            lambda session: workqueue.claim(session, work.kind, work.batch_size, self.lease_seconds, key)
        )
        if not claimed.images:
            return len(claimed)
        image_ids = [image.image_id for image in claimed.images]
        try:
            # The service answered current_model() just now: a failure of
            # this call is this batch's doing (or its deadline's).
            outcome = work.compute(model, claimed.images)
        except Exception as exc:
            if isinstance(exc, _UNCHARGED):
                self._release(lane, image_ids)
            else:
                self._retry_later(lane, image_ids, key, exc)
            raise
        except BaseException:
            self._release(lane, image_ids)
            raise
        try:
            work.store(model, outcome)
        except BaseException:
            self._release(lane, image_ids)  # the database failed, not the images
            raise
        lane.done += len(outcome.results)
        lane.refused += len(outcome.refused)
        log.debug(
            "background %s work done",
            work.kind,
            extra={"model": key, "images": len(outcome.results), "refused": len(outcome.refused)},
        )
        return len(claimed)

    def _model_changed(self, lane: Lane) -> bool:
        """Whether an idle lane's service now runs another model (a tagger
        switched with `tagrate models use`): asked at most every
        ``model_check_seconds``; a service that does not answer is idle too
        (its outage shows once there is work)."""
        now = time.monotonic()
        if now - lane.checked_at < self.model_check_seconds:
            return False
        lane.checked_at = now
        try:
            return lane.work.model_key(lane.work.current_model()) != lane.swept_key
        except Exception:
            return False

    def _fed_by_tagging(self, lane: Lane, key: str) -> bool:
        """Whether ``lane``'s results for ``key`` come from a healthy tag
        lane that still has work due: that lane embeds the images it tags,
        so embedding them here would be a second pass."""
        for other in self.lanes:
            work = other.work
            if other is not lane and isinstance(work, Tagging) and work.feeds == key and not other.backoff.failures:
                with self.db.read() as session:
                    return workqueue.has_due(session, work.kind)
        return False

    def _retry_later(self, lane: Lane, image_ids: list[int], key: str, exc: Exception) -> None:
        """Charges the failed call to its images: each is tried again alone
        after its backoff, or parked as failed once out of attempts."""
        error = (exc.message if isinstance(exc, TagrateError) else str(exc)) or type(exc).__name__
        kind = lane.work.kind
        try:
            retries = self.db.write(
                lambda session: workqueue.retry_later(
                    session, kind, image_ids, key, error, self.max_attempts, self.retry_seconds
                )
            )
        except Exception:
            log.warning("could not record the failed %s work; it is due again when its lease ends", kind)
            return
        for retry in retries:
            if retry.parked:
                lane.parked += 1
                log.error(
                    "%s work for image %s failed %d times; parked as failed until retried (/retryfailed): %s",
                    kind,
                    retry.image,
                    retry.attempts,
                    error,
                )
            else:
                lane.retried += 1
                log.warning(
                    "%s work for image %s failed (attempt %d of %d); trying it again alone in %.0fs: %s",
                    kind,
                    retry.image,
                    retry.attempts,
                    self.max_attempts,
                    retry.retry_in,
                    error,
                )

    def _release(self, lane: Lane, image_ids: list[int]) -> None:
        try:
            self.db.write(lambda session: workqueue.release(session, lane.work.kind, image_ids))
        except Exception:
            # The database is down too: the lease runs out on its own.
            log.warning("could not hand back claimed %s work; it is due again when its lease ends", lane.work.kind)
