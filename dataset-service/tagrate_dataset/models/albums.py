"""Albums and their images (``albums/``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlmodel import Field

from .base import DatasetModel, _timestamp

# The longest album name kept.
ALBUM_NAME_MAX_CHARS = 200
# The longest album source (the key an import names an album by).
ALBUM_SOURCE_MAX_CHARS = 200


class Album(DatasetModel, table=True):
    """A user's ordered set of stored images (the original service's
    "montage post"), newest first in the owner's listing."""

    __tablename__ = "albums"
    __table_args__ = (
        # The owner's albums newest first, and an album's neighbours there.
        Index("ix_albums_user_created", "user_id", "created_at", "id"),
        # An import names the album it made (``source``), so running it again
        # finds the album instead of making a second one; NULL for the rest.
        UniqueConstraint("user_id", "source", name="uq_albums_user_id_source"),
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(sa_column_args=[ForeignKey("users.id", ondelete="CASCADE")], nullable=False)
    name: str = Field(default="", sa_type=String(ALBUM_NAME_MAX_CHARS), nullable=False)
    created_at: datetime = _timestamp()
    source: str | None = Field(default=None, sa_type=String(ALBUM_SOURCE_MAX_CHARS), nullable=True)


class AlbumImage(DatasetModel, table=True):
    """An image's place in an album: ``position`` 0, 1, 2... in the album's
    order, kept dense by every change (see ``albums/``)."""

    __tablename__ = "album_images"
    __table_args__ = (
        Index("ix_album_images_album_position", "album_id", "position"),
        # Deleting an image (or merging a duplicate) reaches its albums.
        Index("ix_album_images_image", "image_id"),
    )

    album_id: int = Field(sa_column_args=[ForeignKey("albums.id", ondelete="CASCADE")], primary_key=True)
    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    position: int = Field(nullable=False)
