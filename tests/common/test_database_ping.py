"""PostgreSQL connections are pinged at checkout only after being idle
(``tagrate_common.database._ping_when_idle``): a dead idle one is replaced
before a statement sees it, a recently used one is trusted."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tagrate_common import database
from tagrate_common.database import create_db_engine

from ..conftest import PG_ADMIN_URL


def _pid(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


def test_an_idle_dead_connection_is_replaced_at_checkout(make_pg_database, monkeypatch) -> None:
    engine = create_db_engine(make_pg_database(), pool_size=1, max_overflow=0)
    try:
        first = _pid(engine)
        _terminate(first)
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)  # every checkout counts as idle
        assert _pid(engine) != first  # pinged, found dead, reconnected: the statement never saw it
    finally:
        engine.dispose()


def test_a_connection_used_moments_ago_is_not_pinged(make_pg_database, monkeypatch) -> None:
    engine = create_db_engine(make_pg_database(), pool_size=1, max_overflow=0)
    try:
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 3600.0)
        _terminate(_pid(engine))
        # No ping: the statement meets the dead connection (the failure a
        # server restart at that instant gives), and the pool recovers after.
        with pytest.raises(OperationalError):
            _pid(engine)
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
        assert _pid(engine) > 0
    finally:
        engine.dispose()
