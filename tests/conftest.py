"""Fixtures every test package shares: real databases and image files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

# moto in server mode, for the S3 blob and head stores: a fixture every package may use.
from tests.s3server import moto_server  # noqa: F401

PG_ADMIN_URL = os.environ.get("TAGRATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator[Callable[[], str]]:
    """Creates fresh, empty PostgreSQL databases; drops them at the end.
    Returns SQLAlchemy URLs (``postgresql+psycopg://...``)."""
    created: list[str] = []
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    def create() -> str:
        name = f"tagrate_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)

    yield create
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path, make_pg_database) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tagrate.db'}"
    return make_pg_database()
