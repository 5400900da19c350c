"""Training job records in the trainer's own small database, and the status
they add up to.

A :class:`TrainingJob` row is written when a job starts, updated while it
runs (at most about once a second) and when it ends, so /trainerstatus
answers the same after a restart. A job still ``running`` or ``stopping``
when the trainer starts was cut off by a crash: :meth:`JobStore.recover`
marks it failed, so no job shows as running forever.

A SQLite jobs database (the default, a file in the trainer's data folder)
belongs to one trainer. On PostgreSQL several trainer replicas share the
table: each job row names the replica that runs it (``owner``) and a lease
it renews; :mod:`.claims` holds those statements. A partial unique index
allows one running (or stopping) job per user, whatever replica wrote it. The table is created and changed only by the
trainer's Alembic migrations (``migrations/``), run on every start; their
version table is ``alembic_version_trainer``, so the jobs table may share a
database with the dataset service's tables.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, Column, DateTime, Engine, Index, text
from sqlmodel import Field, Session, SQLModel, col, select

from tagrate_common import database

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version_trainer"
# pg_advisory_xact_lock key, apart from the dataset service's.
_MIGRATION_LOCK_KEY = 0x7A6_7261_7465_7472  # "tagratetr"

RUNNING, STOPPING = "running", "stopping"
SUCCEEDED, FAILED, STOPPED = "succeeded", "failed", "stopped"
IDLE = "idle"
ACTIVE_STATES = (RUNNING, STOPPING)
FINISHED_STATES = (SUCCEEDED, FAILED, STOPPED)
CRASHED_MESSAGE = "the trainer stopped while this job was running"
ACTIVE_WHERE = "state IN ('running', 'stopping')"


def utc_now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every time here is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class TrainerModel(SQLModel, registry=database.model_registry()):
    """The base of the trainer's tables: their own metadata, which the
    trainer's migrations compare against, apart from the dataset service's."""


class TrainingJob(TrainerModel, table=True):
    """One training job, from start to outcome."""

    __tablename__ = "training_jobs"
    # One active job per user, enforced by the database whichever replica writes it.
    __table_args__ = (
        Index(
            "uq_training_jobs_active_user",
            "user",
            unique=True,
            postgresql_where=text(ACTIVE_WHERE),
            sqlite_where=text(ACTIVE_WHERE),
        ),
    )

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, primary_key=True, max_length=32)
    user: str = Field(index=True, max_length=64)  # a user name, or "all"
    force: bool = False
    # Started by the automatic retraining (autotrain.py), not by a request.
    automatic: bool = False
    state: str = Field(default=RUNNING, index=True, max_length=16)
    progress: float = 0.0
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    eta_seconds: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    error: str | None = None
    kind: str | None = Field(default=None, max_length=16)  # the head chosen: linear or mlp
    snapshot_id: str | None = Field(default=None, max_length=200)
    model_version: str | None = Field(default=None, max_length=200)
    started_at: datetime = Field(default_factory=utc_now, sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    # Shared (PostgreSQL) mode: the replica running the job, until when it
    # holds it, and how many replicas have started it (takeovers included).
    owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))
    attempts: int = 1

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def copy(self) -> TrainingJob:
        """A detached copy (the worker keeps changing the original)."""
        return TrainingJob.model_validate(self.model_dump())


@dataclass(frozen=True)
class JobSummary:
    """A finished job, as ``last_job`` reports it."""

    job_id: str
    user: str
    outcome: str
    metrics: dict[str, float]
    error: str | None
    started_at: datetime
    finished_at: datetime | None

    @classmethod
    def of(cls, job: TrainingJob) -> JobSummary:
        return cls(
            job.id, job.user, job.state, dict(job.metrics), job.error, _utc(job.started_at), _utc(job.finished_at)
        )  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrainerStatus:
    """What /trainerstatus shows: the running job, or when none runs the
    most recent one (``state`` is then its outcome, ``idle`` before any)."""

    is_training: bool = False
    state: str = IDLE
    current_user: str | None = None
    progress: float = 0.0
    epoch: int = 0
    epochs: int = 0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    started_at: datetime | None = None
    eta_seconds: float | None = None
    last_job: JobSummary | None = None

    @classmethod
    def of(cls, job: TrainingJob | None, last_finished: TrainingJob | None) -> TrainerStatus:
        last = JobSummary.of(last_finished) if last_finished is not None else None
        if job is None:
            return cls(last_job=last)
        active = job.state in ACTIVE_STATES
        return cls(
            is_training=active,
            state=job.state,
            current_user=job.user if active else None,
            progress=job.progress,
            epoch=job.epoch,
            epochs=job.epochs,
            loss=job.loss,
            metrics=dict(job.metrics),
            started_at=_utc(job.started_at),
            eta_seconds=job.eta_seconds if active else None,
            last_job=last,
        )


def create_jobs_engine(url: str) -> Engine:
    """An engine for the jobs database (see :mod:`tagrate_common.database`:
    SQLite in WAL mode, so status reads never wait for the worker's progress
    writes); a SQLite file's folder is created."""
    return database.create_db_engine(url, pool_size=2, max_overflow=2)


def migrate(engine: Engine) -> None:
    """Brings the jobs table to the newest migration (a fresh database gets
    it). A database whose table an older trainer created is adopted as is."""
    database.migrate(engine, MIGRATIONS_DIR, _MIGRATION_LOCK_KEY)


class JobStore:
    """The ``training_jobs`` table."""

    def __init__(self, engine: Engine) -> None:
        """A store on ``engine``, whose schema must be migrated already
        (:meth:`open` does both)."""
        self.db = database.Database(engine, name="the trainer's jobs database")

    @classmethod
    def open(cls, url: str) -> JobStore:
        """Opens the jobs database at ``url`` and migrates it."""
        engine = create_jobs_engine(url)
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
        return cls(engine)

    @property
    def engine(self) -> Engine:
        return self.db.engine

    def save(self, job: TrainingJob) -> None:
        """Inserts or updates ``job`` (durably, before returning)."""
        copy = job.copy()
        self.db.write(lambda session: session.merge(copy))

    def get(self, job_id: str) -> TrainingJob | None:
        with self.db.read() as session:
            return session.get(TrainingJob, job_id)

    def latest(self, finished_only: bool = False) -> TrainingJob | None:
        """The most recently started job (or finished job)."""
        stmt = select(TrainingJob)
        if finished_only:
            stmt = stmt.where(col(TrainingJob.state).in_(FINISHED_STATES))
        stmt = stmt.order_by(col(TrainingJob.started_at).desc(), col(TrainingJob.id).desc()).limit(1)
        with self.db.read() as session:
            return session.exec(stmt).first()

    def recover(self) -> int:
        """Marks jobs left running or stopping by a crash as failed; returns
        how many there were."""

        def fail_stale(session: Session) -> list[TrainingJob]:
            stale = session.exec(select(TrainingJob).where(col(TrainingJob.state).in_(ACTIVE_STATES))).all()
            for job in stale:
                job.state, job.error, job.finished_at, job.eta_seconds = FAILED, CRASHED_MESSAGE, utc_now(), None
                session.add(job)
            return list(stale)

        stale = self.db.write(fail_stale)
        for job in stale:
            log.warning("job %s for %s was cut off by a restart; marked failed", job.id, job.user)
        return len(stale)

    def dispose(self) -> None:
        self.db.dispose()
