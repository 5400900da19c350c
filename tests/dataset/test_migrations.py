"""Alembic migrations and the engine setup, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, inspect, text

from tagrate_dataset import models
from tagrate_dataset.db import alembic_config, create_db_engine, migrate, normalise_url

# Tests of the migrations: their PostgreSQL databases start empty.
pytestmark = pytest.mark.fresh_database

TABLES = {
    "users",
    "images",
    "ratings",
    "tags",
    "tagger_models",
    "image_taggings",
    "image_tags",
    "image_features",
    "image_hashes",
    "duplicate_pairs",
    "not_duplicates",
    "trained_snapshots",
    "work_items",
    "access_tokens",
    "predictions",
    "prediction_jobs",
    "pending_scores",
    "albums",
    "album_images",
    # tags people own (0009)
    "manual_tags",
    "hidden_tags",
    "tag_aliases",
    "tag_implications",
    "tag_implied",
    "taught_tags",
    "taught_image_tags",
    "browser_sessions",
    # the tags each image has, for intersections (0015)
    "tag_members",
    "tag_members_state",
    "tag_member_versions",
}


def dataset_metadata() -> MetaData:
    """The dataset service's tables: its own metadata, which holds no other
    service's tables (the trainer's job table has its own)."""
    metadata = models.DatasetModel.metadata
    assert set(metadata.tables) == TABLES
    return metadata


def _head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_fresh_database_gets_every_table_at_head(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [_head()]
            # the tables are exactly what the models describe
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, dataset_metadata()) == []
        indexes = {index["name"] for index in inspect(engine).get_indexes("image_tags")}
        assert "ix_image_tags_model_tag_score_image" in indexes
        rating_indexes = {tuple(index["column_names"]) for index in inspect(engine).get_indexes("ratings")}
        assert {("user_id", "rated_at"), ("user_id", "rating")} <= rating_indexes
    finally:
        engine.dispose()


def test_migrating_again_keeps_the_data(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=2, max_overflow=0)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                models.User.__table__.insert(),  # type: ignore[attr-defined]
                {"name": "kept", "created_at": models.utc_now(), "ratings_version": 0},
            )
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM users")).scalars().all() == ["kept"]
    finally:
        engine.dispose()


def test_concurrent_starters_migrate_once(database_url: str) -> None:
    """Replicas starting together: both succeed, the schema is created once."""
    engines = [create_db_engine(database_url, pool_size=1, max_overflow=0) for _ in range(2)]
    errors: list[BaseException] = []

    def run(engine) -> None:
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
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        for engine in engines:
            engine.dispose()


def test_sqlite_is_configured_for_durability(tmp_path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'deep' / 'folder' / 'x.db'}")
    try:
        with engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar_one()  # noqa: E731
            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == 30_000
    finally:
        engine.dispose()


def test_postgres_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalise_url("sqlite:///x.db") == "sqlite:///x.db"
