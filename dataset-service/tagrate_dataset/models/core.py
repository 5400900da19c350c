"""Users, images, ratings, tags and the tagger's tags and feature vectors:
the tables every resource reads (``images/``, ``ratings/``, ``library/``,
``tags/``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ColumnElement, ForeignKey, Index, LargeBinary, String
from sqlmodel import Field

from .base import DatasetModel, _timestamp

# The longest ``images.source`` kept.
SOURCE_MAX_CHARS = 2048


class User(DatasetModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=String(64), unique=True, nullable=False)
    created_at: datetime = _timestamp()
    # Bumped in the same transaction as every insert or value change of one of
    # the user's ratings: the user's snapshot id is derived from it.
    ratings_version: int = Field(default=0, nullable=False)


class Image(DatasetModel, table=True):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_created_at", "created_at"),
        # Albums name images by the client's own filename too (the original's
        # chat bot sends its own names to /createmontagepost).
        Index("ix_images_original_filename", "original_filename"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(sa_type=String(64), unique=True, nullable=False)
    # <sha256>.<ext>: the name every API uses.
    name: str = Field(sa_type=String(80), unique=True, nullable=False)
    format: str = Field(sa_type=String(16), nullable=False)  # Pillow's name, e.g. JPEG
    size_bytes: int = Field(sa_type=BigInteger, nullable=False)
    width: int = Field(nullable=False)
    height: int = Field(nullable=False)
    # The client's own name for the file: metadata only, never a path.
    original_filename: str = Field(default="", sa_type=String(255), nullable=False)
    created_at: datetime = _timestamp()
    # Where the image came from (a URL or post id, AddImages' ``source``):
    # metadata only, "" when not known.
    source: str = Field(
        default="", sa_type=String(SOURCE_MAX_CHARS), sa_column_kwargs={"server_default": ""}, nullable=False
    )


class Rating(DatasetModel, table=True):
    __tablename__ = "ratings"
    __table_args__ = (
        Index("ix_ratings_user_rated_at", "user_id", "rated_at"),
        Index("ix_ratings_user_rating", "user_id", "rating"),
        Index("ix_ratings_image", "image_id"),
    )

    # The primary key (user_id, image_id) is also the uniqueness rule: one
    # rating per user and image.
    user_id: int = Field(sa_column_args=[ForeignKey("users.id", ondelete="CASCADE")], primary_key=True)
    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    rating: float = Field(nullable=False)
    rated_at: datetime = _timestamp()


class Tag(DatasetModel, table=True):
    __tablename__ = "tags"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=String(200), unique=True, nullable=False)  # lowercase
    # The category the tagger's model gives it ("general", "character",
    # "rating", ...); None until a model reported one.
    category: str | None = Field(default=None, sa_type=String(32), nullable=True)


class TaggerModel(DatasetModel, table=True):
    """A tagger model whose scores are stored; the most recently registered
    one is the current model, the one /getimagetags and tag filters use."""

    __tablename__ = "tagger_models"

    id: int | None = Field(default=None, primary_key=True)
    model_id: str = Field(sa_type=String(200), unique=True, nullable=False)
    threshold: float = Field(nullable=False)
    registered_at: datetime = _timestamp()


class ImageTagging(DatasetModel, table=True):
    """An image was tagged by a model, even when no tag passed a threshold."""

    __tablename__ = "image_taggings"
    __table_args__ = (Index("ix_image_taggings_model_image", "tagger_model_id", "image_id"),)

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    tagger_model_id: int = Field(sa_column_args=[ForeignKey("tagger_models.id", ondelete="CASCADE")], primary_key=True)
    tagged_at: datetime = _timestamp()


class ImageTag(DatasetModel, table=True):
    __tablename__ = "image_tags"
    __table_args__ = (
        # Drives tag filters: (model, tag, score >= threshold) is one range
        # scan that yields image ids without touching the table.
        Index("ix_image_tags_model_tag_score_image", "tagger_model_id", "tag_id", "score", "image_id"),
    )

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    tagger_model_id: int = Field(sa_column_args=[ForeignKey("tagger_models.id", ondelete="CASCADE")], primary_key=True)
    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    score: float = Field(nullable=False)


class ImageFeatures(DatasetModel, table=True):
    """A cached feature vector: float32, little-endian, ``dim`` values."""

    __tablename__ = "image_features"
    __table_args__ = (
        # The similarity index (``similar/vectors.py``) reads the vectors
        # stored since it last looked: one range of this index.
        Index("ix_image_features_extractor_created", "extractor_id", "created_at"),
    )

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    extractor_id: str = Field(sa_type=String(200), primary_key=True)
    dim: int = Field(nullable=False)
    vector: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = _timestamp()


def walked_by_image(extractor_id: str) -> ColumnElement[bool]:
    """``image_features.extractor_id = extractor_id`` for a query that walks
    the vectors by image id (an id range in id order, or an id list): written
    as ``extractor_id || '' = ?`` so that no index can serve it and the
    primary key (image_id, extractor_id) does. As a plain equality, SQLite
    (no statistics) takes ix_image_features_extractor_created for it and
    reads and sorts every vector of the extractor for each chunk: 3 s per
    2,048-vector chunk at 100,000 images against 0.14 s, which made
    rescoring a library minutes instead of seconds."""
    return ImageFeatures.extractor_id.concat("") == extractor_id  # type: ignore[attr-defined]
