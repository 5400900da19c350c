"""Similar images and near-duplicates

``image_hashes``: each image's 64-bit perceptual hash (signed BIGINT) and
its five bands, each indexed, and a 32x32 grey picture (the crop check), so the images within a few bits of a hash are
found by index probes; ``grouped`` queues the image for the background
grouping. Images stored before this migration get theirs as background
work (work kind ``hash``).

``duplicate_pairs``: pairs of images found to be the same picture (lower id
first) with their feature similarity; ``not_duplicates``: pairs an admin
said are different pictures.

``ix_image_features_extractor_created``: the similarity index reads the
vectors stored since it last looked.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _image_fk(table: str, column: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["images.id"], name=f"fk_{table}_{column}_images", ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "image_hashes",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("dhash", sa.BigInteger(), nullable=False),
        *(sa.Column(f"band{n}", sa.Integer(), nullable=False) for n in range(5)),
        sa.Column("thumb", sa.LargeBinary(), nullable=False),
        sa.Column("grouped", sa.Boolean(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("image_id", name="pk_image_hashes"),
        _image_fk("image_hashes", "image_id"),
    )
    for n in range(5):
        op.create_index(f"ix_image_hashes_band{n}", "image_hashes", [f"band{n}"])
    op.create_index("ix_image_hashes_grouped", "image_hashes", ["grouped", "image_id"])
    for table, stamp in (("duplicate_pairs", "found_at"), ("not_duplicates", "marked_at")):
        columns = [
            sa.Column("image_a", sa.Integer(), nullable=False),
            sa.Column("image_b", sa.Integer(), nullable=False),
        ]
        if table == "duplicate_pairs":
            columns.append(sa.Column("similarity", sa.Float(), nullable=False))
        op.create_table(
            table,
            *columns,
            sa.Column(stamp, sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("image_a", "image_b", name=f"pk_{table}"),
            _image_fk(table, "image_a"),
            _image_fk(table, "image_b"),
        )
        op.create_index(f"ix_{table}_b", table, ["image_b"])
    op.create_index("ix_image_features_extractor_created", "image_features", ["extractor_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_image_features_extractor_created", "image_features")
    for table in ("not_duplicates", "duplicate_pairs", "image_hashes"):
        op.drop_table(table)
