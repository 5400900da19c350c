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
def make_pg_database() -> Iterator[Callable[..., str]]:
    """Creates fresh PostgreSQL databases; drops them at the end. Returns
    SQLAlchemy URLs (``postgresql+psycopg://...``). ``migrated=True``: the
    dataset and trainer schemas already at head, copied from a template
    this process migrates once (PostgreSQL copies a database in a tenth of
    a second; the migrations take one to two seconds per database, which
    hundreds of tests paid for the same tables)."""
    created: list[str] = []
    template: list[str] = []
    base = PG_ADMIN_URL.rsplit("/", 1)[0]

    def url(name: str) -> str:
        return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)

    def create(migrated: bool = False) -> str:
        if migrated and not template:
            _migrate_to_head(create())
            template.append(created[-1])
        name = f"tagrate_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template[0]}"' if migrated else ""))
        created.append(name)
        return url(name)

    yield create
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate_to_head(database_url: str) -> None:
    """Both services' migrations, as their first starts run them; no
    connection stays open (a template must have none to be copied)."""
    from tagrate_dataset.db import create_db_engine
    from tagrate_dataset.db import migrate as migrate_dataset
    from tagrate_trainer.jobs import migrate as migrate_trainer

    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrate_dataset(engine)
        migrate_trainer(engine)
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path, make_pg_database) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL. The
    SQLite file is new; the PostgreSQL database has both services' schemas
    at head already (what the services' own start migrates to: nothing left
    to do), unless the test is marked ``fresh_database`` (an empty one, for
    tests of the migrations themselves)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tagrate.db'}"
    return make_pg_database(migrated=request.node.get_closest_marker("fresh_database") is None)


# --- pytest-xdist (`make test` runs TEST_WORKERS workers) ---------------------
# Tests are sent to workers a module at a time, so a module's fixtures (its
# real stacks) start once; the browser tests go to one worker as one group,
# as they share the `make run` stack and the library of tests/ui/conftest.py
# (package-scoped, so Playwright's event loop ends with the group and a later
# module's asyncio.run() works). A module in _SPLIT_BY_PARAM goes one
# parameter at a time (its module-scoped stack is per parameter anyway), so
# its two halves can run on both workers at once.
#
# The units go longest first (seconds of one worker in a whole run, 1,650
# passed, on the 2-core machine under a load average of about 15,
# 2026-12-08; a stale figure only changes the order), the rest in
# collection order: the run no longer ends with one worker busy for minutes
# on a long module that started last while the other is idle.
_ONE_GROUP = ("tests/ui/",)
_SPLIT_BY_PARAM = ("tests/run/test_replica_failover.py",)
_SECONDS = {
    "tests/dataset/library/test_listing_paths.py": 468,
    "tests/ui/": 337,
    "tests/run/test_replica_failover.py[fs]": 233,
    "tests/run/test_replica_failover.py[s3]": 198,
    "tests/gateway/test_auth.py": 171,
    "tests/trainer/test_autotrain.py": 121,
    "tests/trainer/test_training.py": 109,
    "tests/run/test_fault_injection.py": 108,
    "tests/dataset/images/test_service.py": 99,
    "tests/trainer/test_server.py": 86,
    "tests/gateway/test_predictions_e2e.py": 82,
    "tests/tagger/test_onnx_backend.py": 68,
    "tests/trainer/test_selection.py": 64,
    "tests/trainer/test_unrelated_taste.py": 64,
    "tests/dataset/test_s3_crash.py": 60,
}
# A worker blocked on the last test of its unit gets its next unit at once
# (xdist runs a test only once it knows the one after it); while that last
# test is a long one, the next unit is taken from the short end of the queue,
# so a long unit does not wait behind another long one while the other worker
# runs out of work.
_LONG_UNIT = 60


def _unit_of(nodeid: str) -> str:
    module = nodeid.split("::", 1)[0]
    group = next((group for group in _ONE_GROUP if module.startswith(group)), None)
    if group is not None:
        return group
    if module in _SPLIT_BY_PARAM and nodeid.endswith("]"):
        return module + nodeid[nodeid.rindex("[") :]
    return module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit_of(nodeid)

        def schedule(self) -> None:
            """LoadScopeScheduling.schedule with the queue longest first."""
            assert self.collection_is_completed
            if self.collection is not None:
                for node in self.nodes:
                    self._reschedule(node)
                return
            if not self._check_nodes_have_same_collection():
                self.log("**Different tests collected, aborting run**")
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            if not self.collection:
                return
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            for unit in sorted(units, key=lambda unit: -_SECONDS.get(unit, 0)):  # stable: the rest in order
                self.workqueue[unit] = units[unit]
            for _ in range(max(0, len(self.nodes) - len(self.workqueue))):
                unused, _work = self.assigned_work.popitem()
                unused.shutdown()
            for node in self.nodes:
                self._assign_work_unit(node)
            for node in self.nodes:
                self._reschedule(node)
            if not self.workqueue:
                for node in self.nodes:
                    node.shutdown()

        def _assign_work_unit(self, node) -> None:  # type: ignore[no-untyped-def]
            busy = [unit for unit, work in self.assigned_work.get(node, {}).items() if not all(work.values())]
            if len(self.workqueue) > 1 and any(_SECONDS.get(unit, 0) >= _LONG_UNIT for unit in busy):
                self.workqueue.move_to_end(next(reversed(self.workqueue)), last=False)
            super()._assign_work_unit(node)

    config.option.loadscopereorder = False
    return ModuleScheduling(config, log)
