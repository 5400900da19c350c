"""The database plumbing of the services that keep one (the dataset service
and the trainer): engine creation for SQLite and PostgreSQL, Alembic
migrations on start, and transactions with the retry rules every write needs.

SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk before
the call returns), foreign keys on and a busy timeout. Write transactions
start with ``BEGIN IMMEDIATE``: a deferred transaction that reads first and
writes later fails at once with "database is locked" when another writer got
in between, instead of waiting for it. Writers of one process also take
turns on a lock of their own first: SQLite's busy handler polls with sleeps
of up to 100 ms, so concurrent writers waiting on it left the database idle
between transactions (an import at 8 at once spent most of its time
there); on the process's lock the next writer starts the moment the last
one commits. Other processes still meet at SQLite's lock. PostgreSQL is
reached through psycopg 3.

Each service's tables live on their own :func:`model_registry`, so one
service's migrations compare only its own tables, and each service keeps its
own Alembic version table, so two services may share one database.

The gateway never imports this module (it keeps SQLAlchemy out of the
gateway's process).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, IntegrityError, OperationalError
from sqlalchemy.orm import registry
from sqlmodel import Session

from tagrate_common.errors import InsufficientStorage, Unavailable

log = logging.getLogger(__name__)
# SQLite's "database or disk is full", PostgreSQL's DiskFull ("could not
# extend file ... No space left on device").
_DISK_FULL = re.compile(r"disk is full|no space left on device|could not extend file|disk quota", re.IGNORECASE)

T = TypeVar("T")

# Every constraint gets a predictable name, so later migrations (including
# SQLite batch migrations, which rebuild tables) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
_SQLITE_BEGIN = ("DEFERRED", "IMMEDIATE")
# PostgreSQL serialization failure and deadlock: the transaction may simply be retried.
_RETRYABLE_SQLSTATES = {"40001", "40P01"}


def model_registry() -> registry:
    """A fresh SQLAlchemy registry (and metadata, with the naming convention)
    for one service's SQLModel tables: ``class Base(SQLModel,
    registry=model_registry())``. SQLModel's own registry is global to the
    process, so tables on it would mix with any other service's."""
    return registry(metadata=MetaData(naming_convention=NAMING_CONVENTION))


def normalise_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` URLs use psycopg 3 (the only
    PostgreSQL driver installed); other URLs are returned unchanged."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _enable_wal(cursor: Any, timeout: float) -> None:
    """Switches the file to WAL (it stays so). Switching needs an exclusive
    lock and SQLite answers "database is locked" at once, without its busy
    handler, while another connection (a replica starting at the same time)
    holds any lock, so it is retried here until the busy timeout."""
    deadline = time.monotonic() + timeout
    while cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def create_db_engine(
    url: str, *, pool_size: int = 8, max_overflow: int = 16, sqlite_busy_timeout_seconds: float = 30.0
) -> Engine:
    """An engine for ``url`` configured for durability (see module doc). A
    SQLite file's folder is created if missing."""
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No JIT: the listings' statements run in milliseconds, and their cost
        # estimates (inflated by the tag filters' OR'ed probes) pass
        # jit_above_cost often, when compiling took 100-800 ms of a
        # 100 ms page (EXPLAIN ANALYZE at the 100k bench library).
        engine = create_engine(
            url, pool_size=pool_size, max_overflow=max_overflow, connect_args={"options": "-c jit=off"}
        )
        _ping_when_idle(engine)
        return engine

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        connect_args={"check_same_thread": False, "timeout": sqlite_busy_timeout_seconds},
    )
    busy_ms = int(sqlite_busy_timeout_seconds * 1000)

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # The driver must not open transactions on its own: _begin does, with
        # the mode the caller asked for.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (f"busy_timeout={busy_ms}", "synchronous=FULL", "foreign_keys=ON"):
            cursor.execute(f"PRAGMA {pragma}")
        _enable_wal(cursor, sqlite_busy_timeout_seconds)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:  # type: ignore[no-untyped-def]
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode not in _SQLITE_BEGIN:
            raise ValueError(f"unknown SQLite transaction mode {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


# A PostgreSQL connection back in use after this long idle is pinged first.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_when_idle(engine: Engine) -> None:
    """Pings a pooled PostgreSQL connection at checkout when it has been
    idle for ``PING_AFTER_IDLE_SECONDS`` or more; a dead one is replaced
    (the pool retries on ``DisconnectionError``) before any statement sees
    it, as ``pool_pre_ping`` would. ``pool_pre_ping`` itself pings at every
    checkout: a round trip of about 0.15 ms per request, a tenth of a page
    of /getuserdata. A connection used moments ago is alive unless the
    server went away in those moments; then the call fails as any call
    running at that instant does (503, retryable), and SQLAlchemy drops
    the pool's other connections with it."""

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        returned = record.info.get("returned_at")
        if returned is not None and time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping runs
        except Exception as exc:
            raise DisconnectionError(f"the pooled connection is gone: {exc}") from exc

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info["returned_at"] = time.monotonic()


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def alembic_config(migrations_dir: Path, engine: Engine | None = None) -> Config:
    """The Alembic configuration for the migrations in ``migrations_dir``;
    with ``engine``, env.py migrates through it instead of reading a URL."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("path_separator", "os")
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, migrations_dir: Path, lock_key: int) -> None:
    """Brings the schema to the newest migration in ``migrations_dir`` (a
    fresh database gets every table). Never drops anything; safe to run from
    several replicas at once: on PostgreSQL they queue on the advisory lock
    ``lock_key`` (one key per service), on SQLite on the write lock."""
    # SQLite: IMMEDIATE takes the write lock up front, so concurrent starters queue.
    bind = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(engine) else engine
    with bind.begin() as conn:
        if not is_sqlite(engine):
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})
        config = alembic_config(migrations_dir)
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    log.info("database schema is up to date (%s)", migrations_dir.parent.name)


def own_tables_only(metadata: MetaData) -> Callable[[str | None, str, Any], bool]:
    """An Alembic ``include_name`` hook that leaves out every table not in
    ``metadata``: in a database two services share, autogenerate and
    comparisons see only the service's own tables (and never propose to
    drop the other's)."""

    def include_name(name: str | None, type_: str, _parent_names: Any) -> bool:
        return type_ != "table" or name in metadata.tables

    return include_name


def run_alembic_env(metadata: MetaData, version_table: str, default_url: Callable[[], str]) -> None:
    """The body of a service's ``migrations/env.py``. Migrations run on the
    connection :func:`migrate` hands over (``config.attributes["connection"]``);
    the ``alembic`` command line connects to its ``sqlalchemy.url`` option or
    else to ``default_url()`` (the service's configured database) through
    the same engine setup. ``version_table`` keeps each service's migration
    state apart in a shared database."""
    from alembic import context  # only importable while Alembic runs an env.py

    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run them against a database")

    def configure_and_run(connection) -> None:  # type: ignore[no-untyped-def]
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            include_name=own_tables_only(metadata),
            # SQLite cannot ALTER most things: batch mode rebuilds the table.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    connection = context.config.attributes.get("connection")
    if connection is not None:
        configure_and_run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url") or default_url()
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


def _retryable(exc: DBAPIError) -> bool:
    if isinstance(exc, IntegrityError):
        return True  # lost a race on a unique constraint: the retry sees the winner's row
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


class Database:
    """The engine plus the kinds of transaction a service uses. ``name``
    names the database in the error a client sees when it is unreachable."""

    def __init__(self, engine: Engine, write_retries: int = 8, name: str = "the database") -> None:
        self.engine = engine
        self.write_retries = write_retries
        self.name = name
        sqlite = is_sqlite(engine)
        self._write_engine = engine.execution_options(sqlite_begin="IMMEDIATE") if sqlite else engine
        # SQLite: one writer at a time anyway; this process's queue up here (see the module docstring).
        self._writer: AbstractContextManager[Any] = threading.RLock() if sqlite else nullcontext()
        # SQLite: a deferred transaction reads one WAL snapshot throughout.
        # PostgreSQL's default READ COMMITTED takes a new snapshot per statement.
        self._snapshot_engine = engine if sqlite else engine.execution_options(isolation_level="REPEATABLE READ")

    def write(self, work: Callable[[Session], T]) -> T:
        """Runs ``work`` in one write transaction and commits it (durably)
        before returning its result. A transaction that lost a race on a unique
        constraint, or a PostgreSQL serialization failure or deadlock, is rolled
        back and run again from the start, so ``work`` must only touch the
        database."""
        with self._writer:
            return self._write(work)

    def _write(self, work: Callable[[Session], T]) -> T:
        for attempt in range(1, self.write_retries + 1):
            try:
                with Session(self._write_engine, expire_on_commit=False) as session:
                    result = work(session)
                    session.commit()
                    return result
            except DBAPIError as exc:
                if attempt == self.write_retries or not _retryable(exc):
                    if isinstance(exc, OperationalError):
                        raise self._unavailable(exc) from exc
                    raise
                log.debug("write transaction retried after %s", type(exc).__name__)
        raise AssertionError("unreachable")

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session (its transaction is rolled back at the end)."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session whose every query sees the same committed state
        (for reads that must agree with each other, like a snapshot id and
        the examples it names)."""
        try:
            with Session(self._snapshot_engine, expire_on_commit=False) as session:
                yield session
        except OperationalError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: OperationalError) -> Unavailable | InsufficientStorage:
        """A database that cannot be reached (or stays locked) is an outage
        the caller may retry, not a bug in the request; a full disk is a 507
        saying so (nothing was committed)."""
        log.error("database failure: %s", exc.orig)
        if _DISK_FULL.search(str(exc.orig)):
            return InsufficientStorage(
                f"{self.name} cannot write: the disk is full; nothing was changed, try again once space is freed"
            )
        return Unavailable(f"{self.name} is unavailable or busy; try again shortly", "database_unavailable")

    def dispose(self) -> None:
        self.engine.dispose()
