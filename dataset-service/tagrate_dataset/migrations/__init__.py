"""Alembic migrations of the dataset database (applied on start by
``tagrate_dataset.db.migrate``)."""
