"""Albums

``albums``: a user's ordered sets of stored images (the original service's
"montage posts"), with an optional name and the key an import made it
under (``source``, unique per user so an import run twice makes no second
album). ``ix_albums_user_created`` gives a user's albums newest first and
an album's neighbours in that order.

``album_images``: an image's place in an album (dense positions 0, 1, ...);
``ix_album_images_image`` reaches an image's albums when it is deleted or
merged into its duplicate.

``ix_images_original_filename``: albums name images by the client's own
filename too (the original's chat bot sends its own names).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "albums",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_albums"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_albums_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint("user_id", "source", name="uq_albums_user_id_source"),
    )
    op.create_index("ix_albums_user_created", "albums", ["user_id", "created_at", "id"])
    op.create_table(
        "album_images",
        sa.Column("album_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("album_id", "image_id", name="pk_album_images"),
        sa.ForeignKeyConstraint(
            ["album_id"], ["albums.id"], name="fk_album_images_album_id_albums", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_album_images_image_id_images", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_album_images_album_position", "album_images", ["album_id", "position"])
    op.create_index("ix_album_images_image", "album_images", ["image_id"])
    op.create_index("ix_images_original_filename", "images", ["original_filename"])


def downgrade() -> None:
    # Migrations never drop tables (see 0001): albums are what people made.
    raise NotImplementedError("the album tables cannot be downgraded")
