"""Alembic environment for the dataset database.

The service runs migrations through :func:`tagrate_dataset.db.migrate`, which
hands over an open connection (``config.attributes["connection"]``). The
``alembic`` command line (``cd dataset-service && alembic revision
--autogenerate -m "..."``) works too: it connects to ``DATABASE_URL`` (or the
default SQLite file) through the same engine setup.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from tagrate_dataset import models  # noqa: F401 - registers the tables on SQLModel.metadata

target_metadata = SQLModel.metadata


def _configure_and_run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure_and_run(connection)
        return
    from tagrate_dataset.config import DatasetSettings
    from tagrate_dataset.db import create_db_engine

    url = context.config.get_main_option("sqlalchemy.url") or DatasetSettings().database_url
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            _configure_and_run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run them against a database")
run_migrations_online()
