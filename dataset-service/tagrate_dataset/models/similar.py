"""Perceptual hashes and near-duplicate pairs (``similar/``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, LargeBinary
from sqlmodel import Field

from .base import DatasetModel, _timestamp

# Bands of the 64-bit perceptual hash, as (first bit, bits): two hashes at
# most len(HASH_BANDS) - 1 bits apart agree on at least one band.
HASH_BANDS = ((0, 13), (13, 13), (26, 13), (39, 13), (52, 12))


class ImageHash(DatasetModel, table=True):
    """An image's perceptual hash (``tagrate_common.images.difference_hash``,
    signed 64-bit) and its bands, each indexed: near-duplicate candidates
    are the images that share a band (see ``similar/duplicates.py``)."""

    __tablename__ = "image_hashes"
    __table_args__ = (
        Index("ix_image_hashes_band0", "band0"),
        Index("ix_image_hashes_band1", "band1"),
        Index("ix_image_hashes_band2", "band2"),
        Index("ix_image_hashes_band3", "band3"),
        Index("ix_image_hashes_band4", "band4"),
        # The background grouping's queue: hashed images not compared yet.
        Index("ix_image_hashes_grouped", "grouped", "image_id"),
    )

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    dhash: int = Field(sa_type=BigInteger, nullable=False)
    band0: int = Field(nullable=False)
    band1: int = Field(nullable=False)
    band2: int = Field(nullable=False)
    band3: int = Field(nullable=False)
    band4: int = Field(nullable=False)
    # The picture in grey at 32x32 (``tagrate_common.images.grey_thumbnail``):
    # a candidate pair is confirmed only if one is the other, or a crop of it.
    thumb: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Whether the background grouping has compared the image with the rest.
    grouped: bool = Field(default=False, sa_column_kwargs={"server_default": "0"}, nullable=False)


class DuplicatePair(DatasetModel, table=True):
    """Two stored images found to be the same picture (``image_a`` <
    ``image_b``), with the cosine similarity of their feature vectors;
    groups are the connected sets of pairs."""

    __tablename__ = "duplicate_pairs"
    __table_args__ = (Index("ix_duplicate_pairs_b", "image_b"),)

    image_a: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    image_b: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    similarity: float = Field(nullable=False)
    found_at: datetime = _timestamp()


class NotDuplicate(DatasetModel, table=True):
    """Two images an admin said are different pictures (``image_a`` <
    ``image_b``): no group holds both again."""

    __tablename__ = "not_duplicates"
    __table_args__ = (Index("ix_not_duplicates_b", "image_b"),)

    image_a: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    image_b: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    marked_at: datetime = _timestamp()
