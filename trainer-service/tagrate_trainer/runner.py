"""Running training jobs: one at a time, on a worker thread, so the
trainer's RPCs stay responsive while a job runs.

:meth:`JobRunner.start` validates a request against the dataset service
(unknown user, too few ratings, a job already running, a model already
trained on exactly the current ratings) and starts the worker, which

1. asks the rater for its feature extractor id and streams the user's
   ratings with cached feature vectors from the dataset service,
2. trains a head (:mod:`.selection`: candidates cross-validated, the best
   refitted), compared on the held-out ratings with the rater's current
   global head when the trainer has its weights; for a personal head, the
   global head is also what the ``residual`` and ``blend`` candidates build
   on, and its linear prior that of the ``prior`` candidate,
3. publishes it: PublishHead to the rater, then RecordTrainedSnapshot with
   the dataset service, so /verifydatasets knows which ratings the model
   saw. Nothing is published unless training completed.

:meth:`JobRunner.stop` is cooperative: the worker checks after every
mini-batch and between phases (a pending data stream is cancelled), and
ends the job ``stopped`` with nothing published. Once publishing has begun
the job can no longer be stopped.

When no candidate beats the user's mean rating, or the global head predicts
their ratings better, the job fails saying so (``selected_none`` or
``selected_global`` in its metrics) and nothing is published.

Several replicas on one PostgreSQL jobs table: see :mod:`.shared_runner`.
"""

from __future__ import annotations

import logging
import threading
import time

from tagrate_common import validation
from tagrate_common.errors import AlreadyExists, Conflict, InvalidArgument, TagrateError
from tagrate_common.logging import request_id_var

from .config import TrainerSettings
from .job_config import public_metrics, training_config
from .jobs import (
    ACTIVE_STATES,
    FAILED,
    RUNNING,
    STOPPED,
    STOPPING,
    SUCCEEDED,
    JobStore,
    TrainerStatus,
    TrainingJob,
    utc_now,
)
from .peers import Extractor, Peers, StreamCancelled, StreamHandle
from .published import GlobalHeadCopies, GlobalHeadCopy
from .selection import train_head
from .selection.candidates import NONE, Prior, global_prior
from .training import NotEnoughData, ProgressReport, TrainingStopped, lower_thread_priority

log = logging.getLogger(__name__)

# Share of a job's progress each stage takes (training gets the rest).
LOADING_SHARE = 0.1
PUBLISHING_SHARE = 0.05
# Progress is written to the jobs database at most this often.
SAVE_INTERVAL_SECONDS = 1.0
SHUTDOWN_MESSAGE = "the trainer was shut down while this job was running"


def running_error(job: TrainingJob) -> AlreadyExists:
    return AlreadyExists(
        f"a training is already running (for '{job.user}'); wait for it to finish or stop it with /stoptraining",
        "training_running",
    )


class JobRunner:
    """Starts, tracks and stops training jobs; at most one runs at a time."""

    def __init__(
        self, settings: TrainerSettings, store: JobStore, peers: Peers, global_heads: GlobalHeadCopies
    ) -> None:
        self.settings = settings
        self.store = store
        self.peers = peers
        self.global_heads = global_heads
        self.config = training_config(settings)
        # Guards _job, _publishing and the job's fields (the worker writes
        # them, status readers copy them).
        self._lock = threading.Lock()
        # Serialises start(): validation and the check for a running job
        # happen as one step, so two concurrent requests cannot both start.
        self._start_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._job: TrainingJob | None = None
        self._last_finished: TrainingJob | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stream = StreamHandle()
        self._publishing = False
        self._shutting_down = False
        self._last_save = 0.0

    def recover(self) -> None:
        """Marks jobs cut off by a crash as failed and loads the latest job,
        so the status after a restart is the status before it."""
        self.store.recover()
        with self._lock:
            self._job = self.store.latest()
            self._last_finished = self.store.latest(finished_only=True)

    # ---- the RPCs ----

    def status(self) -> TrainerStatus:
        with self._lock:
            return TrainerStatus.of(self._job, self._last_finished)

    def _active_job(self) -> TrainingJob | None:
        """The job that runs (or is stopping); call with ``_lock`` held. Its
        state, not its thread, decides: the thread lives a moment longer
        after recording the outcome, and a client that saw the outcome may
        start the next job at once."""
        job = self._job
        return job if job is not None and job.state in ACTIVE_STATES else None

    def start(self, user: str, force: bool = False, automatic: bool = False) -> TrainerStatus:
        """Validates and starts a job for ``user`` (``all``: the global head).

        InvalidArgument for a malformed name or too few ratings, NotFound
        for an unknown user, AlreadyExists while a job runs, Conflict when
        the user's model is trained on exactly the current ratings (unless
        ``force``). ``automatic``: started by :mod:`.autotrain`; such a job
        runs at a lowered CPU priority and a request's job stops it."""
        subject = validation.user_name(user, allow_all=True)
        with self._start_lock:
            if not automatic:
                self._preempt_automatic()
            self._refuse_if_running()
            info = self.peers.user(subject)  # NotFound for an unknown user
            need = self.settings.min_ratings
            if info.ratings < need:
                whose = "all users together have" if subject == validation.ALL_USERS else f"'{subject}' has"
                raise InvalidArgument(
                    f"{whose} {info.ratings} rating{'s' if info.ratings != 1 else ''}; training needs at least {need}",
                    "not_enough_ratings",
                )
            if not force and info.trained_snapshot_id is not None and info.trained_snapshot_id == info.snapshot_id:
                raise Conflict(
                    f"the model of '{subject}' is already trained on exactly the current {info.ratings} ratings; "
                    "add or change ratings first, or pass force=true to train it again",
                    "model_up_to_date",
                )
            job = TrainingJob(user=subject, force=force, automatic=automatic, epochs=self.config.max_epochs)
            self._insert(job)
            self._launch(job)
            log.info("training job %s started for %s", job.id, subject, extra={"force": force, "automatic": automatic})
            return self.status()

    def _insert(self, job: TrainingJob) -> None:
        """Records a new job before it runs."""
        self.store.save(job)

    def _launch(self, job: TrainingJob) -> None:
        """Runs ``job`` on a fresh worker thread."""
        with self._lock:
            self._job = job
            self._publishing = False
            self._stop = threading.Event()
            self._stream = StreamHandle()
            self._thread = threading.Thread(target=self._work, args=(job,), name=f"train-{job.user}", daemon=True)
            self._thread.start()

    def busy(self) -> bool:
        """Whether a job runs (or is stopping)."""
        with self._lock:
            return self._active_job() is not None

    def _preempt_automatic(self) -> None:
        """A request to train must not wait for background work: a running
        automatic job (not yet publishing) is stopped first, and ends
        ``stopped``; the automatic retraining tries it again later."""
        with self._lock:
            job, thread = self._active_job(), self._thread
            if job is None or not job.automatic or self._publishing:
                return
            self._request_stop()
        log.info("stopping automatic job %s for %s: a training was requested", job.id, job.user)
        if thread is not None:
            thread.join(self.settings.stop_wait_seconds)

    def _refuse_if_running(self) -> None:
        with self._lock:
            job = self._active_job()
            if job is not None:
                raise running_error(job)

    def stop(self) -> TrainerStatus:
        """Asks the running job to stop and waits (briefly) until it has.
        Conflict when no job runs, or when it is already publishing."""
        with self._lock:
            job = self._active_job()
            if job is None:
                raise Conflict("no training is running; there is nothing to stop", "not_training")
            if self._publishing:
                raise Conflict(
                    f"the training for '{job.user}' has finished and its model is being published; "
                    "it can no longer be stopped",
                    "training_publishing",
                )
            if job.state == RUNNING:
                job.state = STOPPING
            thread = self._thread
            self._request_stop()
        self._save(job, force=True)
        if thread is not None:
            thread.join(self.settings.stop_wait_seconds)
        return self.status()

    def _request_stop(self) -> None:
        self._stop.set()
        self._stream.cancel()

    def close(self, timeout: float = 10.0) -> None:
        """Stops a running job (recorded as stopped by the shutdown) and
        waits for the worker to end."""
        with self._lock:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return
            self._shutting_down = True
            if not self._publishing:
                self._request_stop()
        thread.join(timeout)

    # ---- the worker ----

    def _save(self, job: TrainingJob, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < SAVE_INTERVAL_SECONDS:
            return
        # Copy and write under one lock: writes then land in the order the
        # copies were taken, so a stop request's "stopping" can never
        # overwrite the worker's final outcome.
        with self._save_lock:
            self._last_save = now
            with self._lock:
                snapshot = job.copy()
            try:
                self._write(snapshot)
            except Exception:  # progress is worth losing; the job is not
                log.exception("could not record the progress of job %s", job.id)

    def _write(self, snapshot: TrainingJob) -> None:
        """Writes a copy of the running job (called under ``_save_lock``)."""
        self.store.save(snapshot)

    def _update(self, job: TrainingJob, **fields: object) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(job, name, value)
        self._save(job)

    def _should_stop(self) -> bool:
        return self._stop.is_set()

    def _work(self, job: TrainingJob) -> None:
        token = request_id_var.set(f"job-{job.id[:10]}")
        started = time.monotonic()
        if job.automatic:
            lower_thread_priority(self.settings.retrain_nice)
        try:
            self._train_and_publish(job)
            self._finish(job, SUCCEEDED)
            log.info(
                "training job %s for %s succeeded in %.1fs",
                job.id,
                job.user,
                time.monotonic() - started,
                extra={"metrics": job.metrics, "model_version": job.model_version},
            )
        except (TrainingStopped, StreamCancelled):
            self._finish(job, STOPPED, SHUTDOWN_MESSAGE if self._shutting_down else None)
            log.info("training job %s for %s stopped", job.id, job.user)
        except NotEnoughData as exc:
            self._finish(job, FAILED, f"cannot train on these ratings: {exc}")
        except TagrateError as exc:
            self._finish(job, FAILED, exc.message)
            log.warning("training job %s for %s failed: %s", job.id, job.user, exc.message)
        except Exception as exc:
            log.exception("training job %s for %s failed unexpectedly", job.id, job.user)
            self._finish(job, FAILED, f"internal error in the trainer: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            request_id_var.reset(token)

    def _finish(self, job: TrainingJob, state: str, error: str | None = None) -> None:
        with self._lock:
            job.state, job.error, job.finished_at, job.eta_seconds = state, error, utc_now(), None
            if state == SUCCEEDED:
                job.progress = 1.0
            self._last_finished = job
        self._save(job, force=True)

    def _train_and_publish(self, job: TrainingJob) -> None:
        extractor = self.peers.extractor()
        self._check_stop()

        def loaded(done: int, total: int) -> None:
            self._update(job, progress=LOADING_SHARE * done / max(1, total))
            self._check_stop()

        snapshot = self.peers.training_data(job.user, extractor, self._stream, loaded)
        self._update(job, snapshot_id=snapshot.snapshot_id, progress=LOADING_SHARE)
        training_global = job.user == validation.ALL_USERS
        copy = self._global_copy(extractor)
        global_head = copy.head(extractor.dimensions) if copy is not None else None
        reference = global_head.predict if global_head is not None else None
        # The global head is what residual and blend candidates build on, except for itself.
        base = global_head if not training_global else None
        prior_head = copy.prior_head(extractor.dimensions) if copy is not None and not training_global else None
        prior = Prior.of(prior_head) if prior_head is not None else None
        train_share = 1.0 - LOADING_SHARE - PUBLISHING_SHARE

        def report(step: ProgressReport) -> None:
            self._update(
                job,
                progress=LOADING_SHARE + train_share * step.progress,
                epoch=step.epoch,
                epochs=step.epochs,
                loss=step.loss,
                eta_seconds=step.eta_seconds,
            )

        result = train_head(
            snapshot.data,
            self.config,
            report,
            self._should_stop,
            reference,
            prior,
            keep_reference=not training_global,
            base=base,
        )
        metrics = public_metrics(result.metrics)
        if result.head is None:
            self._update(job, metrics=metrics)
            raise TagrateError(
                f"{result.message}; nothing was published, the model that served this user keeps serving",
                "no_better_than_mean" if result.selected == NONE else "global_head_better",
            )
        # The global taste as a linear head, for personal heads to shrink toward.
        prior_weights = None
        if training_global:
            linear = global_prior(snapshot.data, result, self.config)
            prior_weights = linear.weights() if linear is not None else None
        with self._lock:
            if self._stop.is_set():
                raise TrainingStopped()
            self._publishing = True
            job.metrics, job.kind = metrics, result.head.kind
            job.progress, job.eta_seconds = 1.0 - PUBLISHING_SHARE, None
        weights = result.head.weights()
        published = self.peers.publish(
            job.user, result.head.kind, weights, extractor.extractor_id, snapshot.snapshot_id, metrics
        )
        self._update(job, model_version=published.version)
        if job.user == validation.ALL_USERS:
            self.global_heads.save(
                GlobalHeadCopy(published.version, extractor.extractor_id, published.kind, weights, prior_weights)
            )
        try:
            self.peers.record_snapshot(job.user, snapshot.snapshot_id, published.version, metrics)
        except TagrateError as exc:
            raise TagrateError(
                f"the model was published (version {published.version}) but the dataset service could not record "
                f"which ratings it was trained on: {exc.message}",
                "snapshot_not_recorded",
            ) from None

    def _check_stop(self) -> None:
        if self._stop.is_set():
            raise TrainingStopped()

    def _global_copy(self, extractor: Extractor) -> GlobalHeadCopy | None:
        """The trainer's copy of the rater's current global head (with its
        prior), when the trainer published it; otherwise None."""
        try:
            live = self.peers.live_head(validation.ALL_USERS)
        except TagrateError as exc:
            log.warning("cannot list the rater's heads, so no global comparison or prior: %s", exc.message)
            return None
        if live is None:
            return None
        copy = self.global_heads.load(live.version, extractor.extractor_id)
        if copy is None:
            log.info("the global head %s was not published by this trainer; no global comparison", live.version)
        return copy
