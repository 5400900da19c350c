"""Alembic environment for the trainer's jobs database.

The trainer runs migrations through :func:`tagrate_trainer.jobs.migrate`,
which hands over an open connection. The ``alembic`` command line (``cd
trainer-service && alembic revision --autogenerate -m "..."``) works too: it
connects to ``TRAINER_DATABASE_URL`` (or the default SQLite file) through the
same engine setup. The version table is ``alembic_version_trainer``, so the
jobs table may live in the dataset service's database.
"""

from __future__ import annotations

from tagrate_common.database import run_alembic_env
from tagrate_trainer.jobs import VERSION_TABLE, TrainerModel


def _configured_url() -> str:
    from tagrate_trainer.config import TrainerSettings

    return TrainerSettings().database_url


run_alembic_env(TrainerModel.metadata, VERSION_TABLE, _configured_url)
