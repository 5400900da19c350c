"""Background work queue

``work_items``: tagging and feature extraction each stored image still
needs, enqueued with the image and drained by the background worker. Images
stored before this migration are enqueued by the worker's first sweep (see
``workqueue.enqueue_missing_*``), not here, so the migration stays fast.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "work_items",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_by", sa.String(200), nullable=False),
        sa.Column("error", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "kind", name="pk_work_items"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_work_items_image_id_images", ondelete="CASCADE"),
    )
    op.create_index("ix_work_items_kind_state_image", "work_items", ["kind", "state", "image_id"])


def downgrade() -> None:
    # Migrations never drop tables; the queue's rows are work still owed.
    raise NotImplementedError("the work queue cannot be downgraded")
