"""The dataset database: its Alembic migrations, run on start, over the
engine setup and transactions every service with a database shares
(:mod:`tagrate_common.database`: SQLite in WAL mode with durable commits and
``BEGIN IMMEDIATE`` writes, PostgreSQL through psycopg 3, write retries)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy import Connection, Engine, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, SQLModel

from tagrate_common import database
from tagrate_common.database import create_db_engine, is_sqlite, normalise_url

__all__ = ["MIGRATIONS_DIR", "Database", "alembic_config", "create_db_engine", "is_sqlite", "migrate", "normalise_url"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key: replicas starting together migrate one at a time.
_MIGRATION_LOCK_KEY = 0x7A6_7261_7465  # "tagrate"


def alembic_config(engine: Engine | None = None) -> Config:
    """The Alembic configuration for this package's migrations; with
    ``engine``, env.py migrates through it instead of reading a URL."""
    return database.alembic_config(MIGRATIONS_DIR, engine)


def migrate(engine: Engine) -> None:
    """Brings the dataset schema to the newest migration (a fresh database
    gets every table). Never drops anything; safe to run from several
    replicas at once."""
    database.migrate(engine, MIGRATIONS_DIR, _MIGRATION_LOCK_KEY)


class Database(database.Database):
    """The dataset database's engine and transactions (see
    :class:`tagrate_common.database.Database`)."""

    def __init__(self, engine: Engine, write_retries: int = 8) -> None:
        super().__init__(engine, write_retries, name="the dataset database")
        # PostgreSQL: no BEGIN before the first statement and no ROLLBACK
        # after the last, two round trips a listing does not need: READ
        # COMMITTED takes a new snapshot per statement inside a transaction
        # too. SQLite keeps its transaction: one WAL snapshot throughout.
        self._read_engine = engine if is_sqlite(engine) else engine.execution_options(isolation_level="AUTOCOMMIT")

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A read-only connection for plain SQL on a hot path: none of a
        Session's work (on SQLite a transaction rolled back at the end; on
        PostgreSQL each statement on its own)."""
        try:
            with self._read_engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise self._unavailable(exc) from exc


def upsert(session: Session, model: type[SQLModel], values: Mapping[str, Any], key: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE: one statement, no race between
    looking and writing. Works on SQLite and PostgreSQL."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    changes = {name: stmt.excluded[name] for name in values if name not in key}
    session.exec(stmt.on_conflict_do_update(index_elements=list(key), set_=changes))


def insert_missing(session: Session, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: rows that already exist (or that a
    concurrent transaction just inserted) are skipped instead of failing."""
    if not rows:
        return
    table: Table = model.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.exec(dialect.insert(table).values(list(rows)).on_conflict_do_nothing())
