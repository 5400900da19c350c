"""The trainer's Alembic migrations on SQLite and PostgreSQL: the jobs table
they make is the model's, they keep data, adopt a table an older trainer
made, and share a database with the dataset service's migrations."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, inspect, text

from tagrate_common.database import alembic_config, create_db_engine, own_tables_only
from tagrate_dataset import db as dataset_db
from tagrate_dataset.models import DatasetModel
from tagrate_trainer.jobs import MIGRATIONS_DIR, SUCCEEDED, VERSION_TABLE, JobStore, TrainerModel, TrainingJob, migrate

# Tests of the migrations: their PostgreSQL databases start empty.
pytestmark = pytest.mark.fresh_database


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config(MIGRATIONS_DIR)).get_current_head()


def _differences(engine: Engine, metadata: MetaData) -> list:
    """What Alembic's autogenerate would change to make the database match
    ``metadata`` (only ``metadata``'s own tables are compared)."""
    with engine.connect() as conn:
        opts = {"compare_type": True, "include_name": own_tables_only(metadata)}
        return compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)


def test_the_metadata_holds_only_the_trainers_table() -> None:
    assert set(TrainerModel.metadata.tables) == {"training_jobs"}
    assert "training_jobs" not in DatasetModel.metadata.tables


def test_a_fresh_database_gets_the_jobs_table_at_head(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        assert set(inspect(engine).get_table_names()) == {"training_jobs", VERSION_TABLE}
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [_head()]
        assert _differences(engine, TrainerModel.metadata) == []
        indexes = {tuple(index["column_names"]) for index in inspect(engine).get_indexes("training_jobs")}
        assert {("user",), ("state",)} <= indexes
    finally:
        engine.dispose()


def test_migrating_again_keeps_the_jobs(database_url: str) -> None:
    store = JobStore.open(database_url)
    try:
        job = TrainingJob(user="kept", state=SUCCEEDED, metrics={"mae": 0.25})
        store.save(job)
        migrate(store.engine)
        again = JobStore.open(database_url)
        try:
            assert again.get(job.id).metrics == {"mae": 0.25}
        finally:
            again.dispose()
    finally:
        store.dispose()


def test_a_table_made_before_the_migrations_is_adopted(database_url: str) -> None:
    """Trainers before the migrations made the table with ``create_all``."""
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        old = MetaData()  # no naming convention, as SQLModel's own metadata had
        TrainingJob.__table__.to_metadata(old)  # type: ignore[attr-defined]
        old.create_all(engine)
        with engine.begin() as conn:
            conn.execute(old.tables["training_jobs"].insert(), TrainingJob(user="old").model_dump())
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text('SELECT "user" FROM training_jobs')).scalars().all() == ["old"]
            assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [_head()]
        assert _differences(engine, TrainerModel.metadata) == []
    finally:
        engine.dispose()


def test_it_shares_a_database_with_the_dataset_service(database_url: str) -> None:
    """Each service keeps its own version table and compares only its own
    tables, in either order of first start."""
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        dataset_db.migrate(engine)
        migrate(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"training_jobs", VERSION_TABLE, "alembic_version", "images", "ratings"} <= tables
        with engine.connect() as conn:
            assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [_head()]
            dataset_head = ScriptDirectory.from_config(dataset_db.alembic_config()).get_current_head()
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [dataset_head]
        assert _differences(engine, TrainerModel.metadata) == []
        assert _differences(engine, DatasetModel.metadata) == []
    finally:
        engine.dispose()


def test_concurrent_starters_migrate_once(database_url: str) -> None:
    engines = [create_db_engine(database_url, pool_size=1, max_overflow=0) for _ in range(2)]
    errors: list[BaseException] = []

    def run(engine: Engine) -> None:
        try:
            migrate(engine)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        with engines[0].connect() as conn:
            assert conn.execute(text(f"SELECT count(*) FROM {VERSION_TABLE}")).scalar_one() == 1
    finally:
        for engine in engines:
            engine.dispose()
