"""Trainer replicas sharing one jobs table on PostgreSQL: the statements
that claim, fence, renew, stop, release and take over a job.

Every job row names the replica running it (``owner``) and how long it
holds it (``lease_expires_at``, on the database's clock, so the replicas'
clocks need not agree). The owner renews the lease while the job runs
(:mod:`.shared_runner`); a replica that dies stops renewing, and once the
lease has expired another replica claims the job with ``FOR UPDATE SKIP
LOCKED`` (two replicas never claim the same row) and runs it again from
the start. Every write the owner makes is fenced on ``owner``: a replica
that lost its job (it was too slow to renew and another took over) can no
longer change the row.

Starting a job takes a transaction-scoped advisory lock first, so two
replicas cannot both see "nothing running" and both start: one job runs at
a time across all replicas (the REST contract: 409 while a training runs),
and the partial unique index on active jobs per user holds whatever writes.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from datetime import timedelta

from sqlalchemy import text
from sqlmodel import Session, col, select

from .jobs import ACTIVE_STATES, FAILED, RUNNING, STOPPED, STOPPING, JobStore, TrainingJob, utc_now

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key serialising job starts (apart from the migration lock).
_START_LOCK_KEY = 0x7A6_7261_7465_7473  # "tagratets"
# A job whose replicas died this many times is failed instead of started again.
MAX_ATTEMPTS = 3
GAVE_UP_MESSAGE = "the trainer replicas running this job stopped {attempts} times; not trying it again"
# The fields the owner writes; owner, lease and attempts only change here.
_OWNER_FIELDS = (
    "state",
    "progress",
    "epoch",
    "epochs",
    "loss",
    "eta_seconds",
    "metrics",
    "error",
    "kind",
    "snapshot_id",
    "model_version",
    "finished_at",
)


def replica_id() -> str:
    """This process's name in the ``owner`` column: host, pid and a random
    part (a restarted process with the same pid is another owner)."""
    return f"{socket.gethostname()[:60]}-{os.getpid()}-{secrets.token_hex(3)}"


class JobClaims:
    """The shared jobs table as one replica (``owner``) sees it."""

    def __init__(self, store: JobStore, owner: str, lease_seconds: float) -> None:
        self.store = store
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)

    def _extend(self, session: Session, job_id: str) -> None:
        session.execute(
            text("UPDATE training_jobs SET lease_expires_at = now() + :lease WHERE id = :id"),
            {"lease": self.lease, "id": job_id},
        )

    def active(self) -> TrainingJob | None:
        """The job running (or stopping) on any replica, or None."""
        with self.store.db.read() as session:
            return session.exec(select(TrainingJob).where(col(TrainingJob.state).in_(ACTIVE_STATES))).first()

    def insert(self, job: TrainingJob) -> TrainingJob | None:
        """Records ``job`` as running here, unless a job already runs
        somewhere: then nothing is written and that job is returned."""
        row = job.copy()
        row.owner = self.owner

        def work(session: Session) -> TrainingJob | None:
            session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _START_LOCK_KEY})
            running = session.exec(select(TrainingJob).where(col(TrainingJob.state).in_(ACTIVE_STATES))).first()
            if running is not None:
                return running
            session.add(row.copy())
            session.flush()
            self._extend(session, row.id)
            return None

        running = self.store.db.write(work)
        if running is None:
            job.owner = self.owner
        return running

    def save(self, job: TrainingJob) -> str | None:
        """Writes the owner's fields of ``job``; returns the state the row
        now has (a stop requested elsewhere stays ``stopping`` until the
        job ends), or None when this replica no longer owns the job."""

        def work(session: Session) -> str | None:
            row = session.exec(select(TrainingJob).where(TrainingJob.id == job.id).with_for_update()).first()
            if row is None or row.owner != self.owner:
                return None
            requested_stop = row.state == STOPPING
            for name in _OWNER_FIELDS:
                setattr(row, name, getattr(job, name))
            if requested_stop and job.state == RUNNING:
                row.state = STOPPING
            session.add(row)
            return row.state

        return self.store.db.write(work)

    def renew(self, job_id: str) -> str | None:
        """Extends this replica's lease on an active job; returns its state,
        or None when this replica no longer owns it (or it ended)."""
        statement = text(
            "UPDATE training_jobs SET lease_expires_at = now() + :lease "
            "WHERE id = :id AND owner = :owner AND state IN ('running', 'stopping') RETURNING state"
        )

        def work(session: Session) -> str | None:
            return session.execute(statement, {"lease": self.lease, "id": job_id, "owner": self.owner}).scalar()

        return self.store.db.write(work)

    def release(self, job_id: str) -> bool:
        """Hands a job this replica runs back (a graceful shutdown): its
        lease ends now, so another replica takes it over at once; the
        hand-over does not count as an attempt."""
        statement = text(
            "UPDATE training_jobs SET owner = NULL, lease_expires_at = now(), attempts = attempts - 1 "
            "WHERE id = :id AND owner = :owner AND state = 'running'"
        )
        return bool(self.store.db.write(lambda s: s.execute(statement, {"id": job_id, "owner": self.owner}).rowcount))

    def request_stop(self) -> TrainingJob | None:
        """Marks the active job ``stopping`` (its owner notices at its next
        renewal); returns it, or None when nothing runs."""

        def work(session: Session) -> TrainingJob | None:
            job = session.exec(
                select(TrainingJob).where(col(TrainingJob.state).in_(ACTIVE_STATES)).with_for_update()
            ).first()
            if job is not None and job.state == RUNNING:
                job.state = STOPPING
                session.add(job)
            return job

        return self.store.db.write(work)

    def claim_expired(self) -> TrainingJob | None:
        """Takes over an active job whose owner's lease expired, reset to
        run again from the start; None when there is none. A job that was
        stopping ends ``stopped``; one that has had MAX_ATTEMPTS owners
        ends ``failed``."""

        def work(session: Session) -> TrainingJob | None:
            job = session.exec(
                select(TrainingJob)
                .where(col(TrainingJob.state).in_(ACTIVE_STATES))
                .where(text("(lease_expires_at IS NULL OR lease_expires_at < now())"))
                .order_by(col(TrainingJob.started_at))
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            if job.state == STOPPING or job.attempts >= MAX_ATTEMPTS:
                job.state = STOPPED if job.state == STOPPING else FAILED
                job.error = None if job.state == STOPPED else GAVE_UP_MESSAGE.format(attempts=job.attempts)
                job.finished_at, job.eta_seconds = utc_now(), None
                session.add(job)
                log.warning("job %s for %s lost its replica; it ended %s", job.id, job.user, job.state)
                return None
            job.owner, job.attempts, job.state = self.owner, job.attempts + 1, RUNNING
            job.progress, job.epoch, job.loss, job.eta_seconds = 0.0, 0, None, None
            session.add(job)
            session.flush()
            self._extend(session, job.id)
            return job.copy()

        return self.store.db.write(work)
