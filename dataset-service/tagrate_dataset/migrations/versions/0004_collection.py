"""Collection management

``images.source`` (where an image came from, kept by AddImages and returned
by GetImageTags) and ``trained_snapshots.metrics`` (the trained model's
evaluation metrics, returned by GetStats). Existing images have no known
source (""), existing snapshots no metrics (NULL).

The new queries need no new index: ListTags groups
``ix_image_tags_model_tag_score_image``, GetImageNeighbours uses the indexes
GetUserData does, and DeleteImage reaches every row of an image through a
primary key or index that starts with ``image_id``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-12
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN on both databases: NOT NULL with a constant default, or nullable.
    op.add_column("images", sa.Column("source", sa.String(2048), server_default="", nullable=False))
    op.add_column("trained_snapshots", sa.Column("metrics", sa.JSON(), nullable=True))


def downgrade() -> None:
    # Migrations never drop data (see 0001): the sources would be lost.
    raise NotImplementedError("the collection columns cannot be downgraded")
