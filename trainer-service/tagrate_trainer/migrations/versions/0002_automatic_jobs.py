"""Automatic training jobs

``training_jobs.automatic``: whether the trainer's automatic retraining
started the job (``tagrate_trainer.autotrain``) rather than a request.
Existing rows were all started by requests.
A table that already has the column is left as it is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    columns = {column["name"] for column in sa.inspect(op.get_bind()).get_columns("training_jobs")}
    if "automatic" in columns:
        return  # a table made with create_all from the current model (adopted by 0001)
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(sa.Column("automatic", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("automatic")
