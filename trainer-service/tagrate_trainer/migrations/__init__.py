"""Alembic migrations of the trainer's jobs database (applied on start by
``tagrate_trainer.jobs.JobStore.open``; version table ``alembic_version_trainer``)."""
