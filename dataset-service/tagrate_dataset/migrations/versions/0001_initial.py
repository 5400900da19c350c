"""Initial schema

Users, images, ratings, tags, tagger models and their scores, cached
feature vectors and trained snapshots.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ratings_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("name", sa.String(80), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("original_filename", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("sha256", name="uq_images_sha256"),
        sa.UniqueConstraint("name", name="uq_images_name"),
    )
    op.create_index("ix_images_created_at", "images", ["created_at"])
    op.create_table(
        "ratings",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Float(), nullable=False),
        sa.Column("rated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "image_id", name="pk_ratings"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_ratings_user_id_users", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_ratings_image_id_images", ondelete="CASCADE"),
    )
    op.create_index("ix_ratings_user_rated_at", "ratings", ["user_id", "rated_at"])
    op.create_index("ix_ratings_user_rating", "ratings", ["user_id", "rating"])
    op.create_index("ix_ratings_image", "ratings", ["image_id"])
    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tags"),
        sa.UniqueConstraint("name", name="uq_tags_name"),
    )
    op.create_table(
        "tagger_models",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tagger_models"),
        sa.UniqueConstraint("model_id", name="uq_tagger_models_model_id"),
    )
    op.create_table(
        "image_taggings",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("tagger_model_id", sa.Integer(), nullable=False),
        sa.Column("tagged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "tagger_model_id", name="pk_image_taggings"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_image_taggings_image_id_images", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tagger_model_id"],
            ["tagger_models.id"],
            name="fk_image_taggings_tagger_model_id_tagger_models",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_image_taggings_model_image", "image_taggings", ["tagger_model_id", "image_id"])
    op.create_table(
        "image_tags",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("tagger_model_id", sa.Integer(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "tagger_model_id", "tag_id", name="pk_image_tags"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_image_tags_image_id_images", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["tagger_model_id"],
            ["tagger_models.id"],
            name="fk_image_tags_tagger_model_id_tagger_models",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name="fk_image_tags_tag_id_tags", ondelete="CASCADE"),
    )
    op.create_index(
        "ix_image_tags_model_tag_score_image", "image_tags", ["tagger_model_id", "tag_id", "score", "image_id"]
    )
    op.create_table(
        "image_features",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("extractor_id", sa.String(200), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "extractor_id", name="pk_image_features"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_image_features_image_id_images", ondelete="CASCADE"
        ),
    )
    op.create_table(
        "trained_snapshots",
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("snapshot_id", sa.String(100), nullable=False),
        sa.Column("ratings_count", sa.Integer(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject", name="pk_trained_snapshots"),
    )


def downgrade() -> None:
    # Migrations never drop tables (a downgrade would destroy the dataset).
    raise NotImplementedError("the initial schema cannot be downgraded")
