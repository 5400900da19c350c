"""Tag categories

``tags.category`` is the category the tagger's model gives a tag
(``general``, ``character``, ``rating``, ...; NULL: none reported yet, e.g.
a tag only people used). A WD v3 or DeepDanbooru model brought with
``tagrate models`` reports them; /getimagetags?detail=true and the UI show
them.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tags") as batch:
        batch.add_column(sa.Column("category", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tags") as batch:
        batch.drop_column("category")
