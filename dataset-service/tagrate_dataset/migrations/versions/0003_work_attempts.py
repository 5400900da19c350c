"""Work item attempts

``work_items.attempts`` and ``work_items.retry_at``: work whose model call
failed (or killed the model service) is retried a bounded number of times,
alone and with its own backoff, then parked as failed, instead of being
claimed again forever (see ``workqueue.py``). Existing rows start at 0
attempts and are due at once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild) on both SQLite and PostgreSQL: a
    # nullable column, and a NOT NULL one with a constant default.
    op.add_column("work_items", sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
    op.add_column("work_items", sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Migrations never drop what the queue relies on (see 0002).
    raise NotImplementedError("the work queue cannot be downgraded")
