"""Tag members

``tag_members(tag_id, image_id)``: the tags each image has from any source
(the current tagger model at or above its threshold and not removed, by
hand, taught; implications applied), one index range per tag, so that a
filter on several common tags intersects sorted ranges; on SQLite a
WITHOUT ROWID table (the rows are the primary key's index). Triggers on
``image_tags``, ``manual_tags``, ``hidden_tags`` and ``taught_image_tags``
keep it in step, and count each tag's changes in ``tag_member_versions``
(what cached copies are keyed by); ``tag_members_state`` (one row) records the tagger model
and threshold it was built for and whether it is ready. The table is built
here from the existing rows (see ``tags/members.py``, whose trigger and
rebuild SQL this uses).

Revision ID: 0015
Revises: 0013
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tagrate_dataset.tags import members

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tag_members",
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tag_id", "image_id", name="pk_tag_members"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "tag_members_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tag_members_state"),
    )
    op.create_table(
        "tag_member_versions",
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tag_id", name="pk_tag_member_versions"),
    )
    members.install(op.get_bind())


def downgrade() -> None:
    conn = op.get_bind()
    for table in ("image_tags", "manual_tags", "hidden_tags", "taught_image_tags", "tag_members"):
        if conn.dialect.name == "sqlite":
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER IF EXISTS tag_members_{table}_{event}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS tag_members_{table} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS tag_members_{table}()")
    op.drop_table("tag_member_versions")
    op.drop_table("tag_members_state")
    op.drop_table("tag_members")
