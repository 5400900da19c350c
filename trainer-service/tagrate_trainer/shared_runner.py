"""Training jobs shared by several trainer replicas (a PostgreSQL jobs
database): :class:`SharedJobRunner` is the :class:`~.runner.JobRunner`
whose job records, not its memory, say what runs.

- Starting claims the one job slot of all replicas (:meth:`JobClaims.insert`):
  a request answered by any replica gets 409 while a job runs anywhere.
- A watcher thread renews the lease of the job this replica runs every
  third of ``TRAINER_JOB_LEASE_SECONDS``; when no job runs here it takes
  over a job whose replica died (its lease expired) and runs it again
  from the start (same ratings and seed: the same head).
- /trainerstatus is read from the table (the running job's progress is
  written about once a second); /stoptraining marks the job ``stopping``
  and its replica stops it at its next renewal.
- A graceful shutdown hands the running job back (its lease ends at once)
  instead of stopping it, so another replica carries on with it.

A single trainer on SQLite keeps the plain :class:`~.runner.JobRunner`:
a job cut off by a crash is marked failed at the next start.
"""

from __future__ import annotations

import logging
import threading
import time

from tagrate_common.errors import Conflict

from .claims import JobClaims, replica_id
from .config import TrainerSettings
from .jobs import ACTIVE_STATES, RUNNING, STOPPING, JobStore, TrainerStatus, TrainingJob
from .peers import Peers
from .published import GlobalHeadCopies
from .runner import JobRunner, running_error

log = logging.getLogger(__name__)


class SharedJobRunner(JobRunner):
    """A :class:`JobRunner` for one of several replicas on one jobs table."""

    def __init__(
        self, settings: TrainerSettings, store: JobStore, peers: Peers, global_heads: GlobalHeadCopies
    ) -> None:
        super().__init__(settings, store, peers, global_heads)
        self.claims = JobClaims(store, replica_id(), settings.job_lease_seconds)
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None

    def recover(self) -> None:
        """Nothing to mark failed: a job whose replica died is taken over
        once its lease expires, by the watcher started here."""
        self._watcher = threading.Thread(target=self._watch, name="job-leases", daemon=True)
        self._watcher.start()
        log.info("trainer replica %s shares its jobs table with any other replicas", self.claims.owner)

    # ---- the RPCs ----

    def status(self) -> TrainerStatus:
        with self._lock:
            local = self._active_job()
            local = local.copy() if local is not None else None
        latest = local if local is not None else self.store.latest()
        return TrainerStatus.of(latest, self.store.latest(finished_only=True))

    def busy(self) -> bool:
        return super().busy() or self.claims.active() is not None

    def _refuse_if_running(self) -> None:
        super()._refuse_if_running()
        running = self.claims.active()
        if running is not None:
            raise running_error(running)

    def _insert(self, job: TrainingJob) -> None:
        running = self.claims.insert(job)
        if running is not None:
            raise running_error(running)

    def _preempt_automatic(self) -> None:
        super()._preempt_automatic()
        running = self.claims.active()
        if running is None or not running.automatic or running.owner == self.claims.owner:
            return
        log.info("stopping automatic job %s of %s elsewhere: a training was requested", running.id, running.user)
        self.claims.request_stop()
        self._wait_ended(running.id)

    def stop(self) -> TrainerStatus:
        if super().busy():
            return super().stop()
        job = self.claims.request_stop()
        if job is None:
            raise Conflict("no training is running; there is nothing to stop", "not_training")
        self._wait_ended(job.id)
        return self.status()

    def _wait_ended(self, job_id: str) -> None:
        """Waits (up to the stop wait) until another replica's job ended."""
        deadline = time.monotonic() + self.settings.stop_wait_seconds
        while time.monotonic() < deadline:
            job = self.store.get(job_id)
            if job is None or job.state not in ACTIVE_STATES:
                return
            time.sleep(0.05)

    # ---- the worker's writes, fenced ----

    def _write(self, snapshot: TrainingJob) -> None:
        self._follow(snapshot.id, self.claims.save(snapshot))

    def _follow(self, job_id: str, state: str | None) -> None:
        """Acts on the row's state after a write or renewal: lost (None) or
        ``stopping`` (a stop requested through another replica) stop the
        local worker."""
        with self._lock:
            job = self._active_job()
            if job is None or job.id != job_id:
                return
            if state is None:
                log.warning("job %s for %s was taken over by another replica; stopping here", job.id, job.user)
            elif state == STOPPING and job.state == RUNNING:
                job.state = STOPPING
            else:
                return
            if not self._publishing:
                self._request_stop()

    # ---- the watcher ----

    def _watch(self) -> None:
        interval = self.settings.job_lease_seconds / 3
        while not self._closing.wait(interval):
            try:
                self._tick()
            except Exception as exc:  # the database is down a moment: the lease has slack
                log.warning("could not renew or claim a training job: %s", exc)

    def _tick(self) -> None:
        with self._lock:
            local = self._active_job()
            job_id = local.id if local is not None else None
        if job_id is not None:
            self._follow(job_id, self.claims.renew(job_id))
            return
        job = self.claims.claim_expired()
        if job is not None:
            log.warning(
                "taking over job %s for %s (attempt %d): its replica stopped renewing its lease or handed it back",
                job.id,
                job.user,
                job.attempts,
            )
            with self._start_lock:
                self._launch(job)

    def close(self, timeout: float = 10.0) -> None:
        """Hands a running job (unless it is publishing) to another replica
        and stops the local worker, which can then no longer write it."""
        self._closing.set()
        with self._lock:
            job = self._active_job()
            publishing = self._publishing
        if job is not None and not publishing and self.claims.release(job.id):
            log.info("handed job %s for %s back for another replica to take over", job.id, job.user)
        super().close(timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)
