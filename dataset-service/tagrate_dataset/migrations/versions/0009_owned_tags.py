"""Tags people own

``manual_tags``: tags a person put on an image (who added it, when);
``hidden_tags``: model or taught tags a person removed from an image, which
stay off through re-tagging; ``tag_aliases`` and ``tag_implications`` (an
admin's rules) with ``tag_implied``, the implications' transitive closure
that filters read; ``taught_tags`` and ``taught_image_tags``: classifiers
learned from manual tags and the tags they put on images.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _image_tag_keys(table: str) -> list[Any]:
    return [
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "tag_id", name=f"pk_{table}"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name=f"fk_{table}_image_id_images", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=f"fk_{table}_tag_id_tags", ondelete="CASCADE"),
    ]


def upgrade() -> None:
    op.create_table(
        "manual_tags",
        *_image_tag_keys("manual_tags"),
        sa.Column("added_by", sa.String(64), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_manual_tags_tag_image", "manual_tags", ["tag_id", "image_id"])
    op.create_table(
        "hidden_tags",
        *_image_tag_keys("hidden_tags"),
        sa.Column("removed_by", sa.String(64), nullable=True),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_hidden_tags_tag_image", "hidden_tags", ["tag_id", "image_id"])
    op.create_table(
        "tag_aliases",
        sa.Column("alias", sa.String(200), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("alias", name="pk_tag_aliases"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name="fk_tag_aliases_tag_id_tags", ondelete="CASCADE"),
    )
    op.create_index("ix_tag_aliases_tag", "tag_aliases", ["tag_id"])
    op.create_table(
        "tag_implications",
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("implies_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tag_id", "implies_id", name="pk_tag_implications"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name="fk_tag_implications_tag_id_tags", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["implies_id"], ["tags.id"], name="fk_tag_implications_implies_id_tags", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "tag_implied",
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("implied_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tag_id", "implied_id", name="pk_tag_implied"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name="fk_tag_implied_tag_id_tags", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["implied_id"], ["tags.id"], name="fk_tag_implied_implied_id_tags", ondelete="CASCADE"),
    )
    op.create_index("ix_tag_implied_implied", "tag_implied", ["implied_id", "tag_id"])
    op.create_table(
        "taught_tags",
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("examples", sa.Integer(), nullable=False),
        sa.Column("negatives", sa.Integer(), nullable=False),
        sa.Column("images_tagged", sa.Integer(), nullable=False),
        sa.Column("precision_cv", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("examples_digest", sa.String(64), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tag_id", name="pk_taught_tags"),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name="fk_taught_tags_tag_id_tags", ondelete="CASCADE"),
    )
    op.create_table(
        "taught_image_tags",
        *_image_tag_keys("taught_image_tags"),
        sa.Column("score", sa.Float(), nullable=False),
    )
    op.create_index(
        "ix_taught_image_tags_tag_score_image", "taught_image_tags", ["tag_id", "score", "image_id"]
    )


def downgrade() -> None:
    # Migrations never drop tables (see 0001): manual tags are what people made.
    raise NotImplementedError("the tag tables cannot be downgraded")
