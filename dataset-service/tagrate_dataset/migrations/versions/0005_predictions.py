"""Predictions on stored images

``predictions``: one stored prediction per (user, image), with the model
version that made it and whether that was the user's personal or the global
model; a row counts only while its version serves the user (see
``scoring.py``). ``ix_predictions_user_score`` drives listings sorted by
prediction; ``ix_predictions_image`` reaches an image's rows on delete.

``prediction_jobs``: a subject's rescoring after a publish, with the id of
the last image scored (the resume point). Every model already recorded gets
a job here, so a library migrated from before this revision is scored by the
running service without a new publish.

``pending_scores``: images whose feature vector was cached and which are
still to be scored for every user with a model.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-14
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("predicted_by", sa.String(16), nullable=False),
        sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "image_id", name="pk_predictions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_predictions_user_id_users", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_predictions_image_id_images", ondelete="CASCADE"),
    )
    op.create_index("ix_predictions_user_score", "predictions", ["user_id", "score"])
    op.create_index("ix_predictions_image", "predictions", ["image_id"])
    op.create_table(
        "prediction_jobs",
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(200), nullable=False),
        sa.Column("after_image_id", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("subject", name="pk_prediction_jobs"),
    )
    op.create_table(
        "pending_scores",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("image_id", name="pk_pending_scores"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_pending_scores_image_id_images", ondelete="CASCADE"
        ),
    )
    op.execute(
        "INSERT INTO prediction_jobs (subject, model_version, after_image_id, enqueued_at) "
        "SELECT subject, model_version, 0, trained_at FROM trained_snapshots WHERE model_version <> ''"
    )


def downgrade() -> None:
    # Migrations never drop tables (see 0001); predictions can be recomputed,
    # but the rescoring owed would be forgotten.
    raise NotImplementedError("the prediction tables cannot be downgraded")
