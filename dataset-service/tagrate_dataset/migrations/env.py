"""Alembic environment for the dataset database.

The service runs migrations through :func:`tagrate_dataset.db.migrate`, which
hands over an open connection. The ``alembic`` command line (``cd
dataset-service && alembic revision --autogenerate -m "..."``) works too: it
connects to ``DATABASE_URL`` (or the default SQLite file) through the same
engine setup. The version table is Alembic's default ``alembic_version``.
"""

from __future__ import annotations

from tagrate_common.database import run_alembic_env
from tagrate_dataset.models import DatasetModel


def _configured_url() -> str:
    from tagrate_dataset.config import DatasetSettings

    return DatasetSettings().database_url


run_alembic_env(DatasetModel.metadata, "alembic_version", _configured_url)
