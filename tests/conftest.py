"""Fixtures every test package shares: real databases and image files."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

# moto in server mode, for the S3 blob and head stores: a fixture every package may use.
from tests.s3server import moto_server  # noqa: F401

PG_ADMIN_URL = os.environ.get("TAGRATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")

# Every tagger and rater the tests start (in this process or as children,
# which inherit the environment) shares one cache of the embedded model's ONNX
# exports, kept between runs: otherwise each fresh data folder exports the
# model again (and, on a CPU with VNNI, quantizes it), seconds to a minute
# of CPU per service start. An export is written under a temporary name and
# renamed, so concurrent workers never read half a file; its name holds the
# weights', torch's and the recipe's versions, so a stale file is never used.
# The tests of the export itself use folders of their own.
os.environ.setdefault("TAGRATE_MODEL_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "test-models"))


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


# --- pytest-xdist (`make test` runs TEST_WORKERS workers) ---------------------
# Tests are sent to workers a module at a time, so a module's fixtures (its
# real stacks) start once; the browser tests go to one worker as one group,
# as they share the session's `make run` stack and its library, and they go
# last, in collection order (tests/ui sorts last): Playwright's sync API
# keeps an event loop running in the worker's thread until the session ends,
# where a later module's asyncio.run() would fail.
_ONE_GROUP = ("tests/ui/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return next((group for group in _ONE_GROUP if module.startswith(group)), module)

    config.option.loadscopereorder = False  # collection order: the browser group last
    return ModuleScheduling(config, log)
