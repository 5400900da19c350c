"""Tags people own: manual and hidden tags, aliases, implications and
taught tags (``tags/owned.py`` and the tag tables' users)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlmodel import Field

from .base import DatasetModel, _timestamp

# ---- tags people own (see ``tags/owned.py`` and ``tags/filtersql.py``) ----


class ManualTag(DatasetModel, table=True):
    """A tag a person put on an image (shared by everyone, as on a booru),
    with who added it (a user name; NULL for an admin)."""

    __tablename__ = "manual_tags"
    __table_args__ = (
        # Filters collect a tag's images from it (the filter-first shape).
        Index("ix_manual_tags_tag_image", "tag_id", "image_id"),
    )

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    added_by: str | None = Field(default=None, sa_type=String(64), nullable=True)
    added_at: datetime = _timestamp()


class HiddenTag(DatasetModel, table=True):
    """A model or taught tag a person removed from an image: it stays off
    that image through re-tagging, and is a negative example for teaching
    the tag. Adding the tag by hand again deletes the row."""

    __tablename__ = "hidden_tags"
    __table_args__ = (Index("ix_hidden_tags_tag_image", "tag_id", "image_id"),)

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    removed_by: str | None = Field(default=None, sa_type=String(64), nullable=True)
    removed_at: datetime = _timestamp()


class TagAlias(DatasetModel, table=True):
    """``alias`` stands for the tag ``tag_id`` everywhere (adding, removing,
    filtering). An alias is never itself a used tag, nor another's target."""

    __tablename__ = "tag_aliases"
    __table_args__ = (Index("ix_tag_aliases_tag", "tag_id"),)

    alias: str = Field(sa_type=String(200), primary_key=True)
    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], nullable=False)
    created_at: datetime = _timestamp()


class TagImplication(DatasetModel, table=True):
    """An implication an admin declared: ``tag_id`` implies ``implies_id``."""

    __tablename__ = "tag_implications"

    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    implies_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    created_at: datetime = _timestamp()


class TagImplied(DatasetModel, table=True):
    """The transitive closure of ``tag_implications`` (rewritten with every
    change to them): a filter on ``implied_id`` also matches ``tag_id``,
    read from ``ix_tag_implied_implied`` inside the listing's statement."""

    __tablename__ = "tag_implied"
    __table_args__ = (Index("ix_tag_implied_implied", "implied_id", "tag_id"),)

    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    implied_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)


class TaughtTag(DatasetModel, table=True):
    """A classifier learned from a manual tag's examples, and what it did."""

    __tablename__ = "taught_tags"

    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    examples: int = Field(nullable=False)
    negatives: int = Field(nullable=False)
    images_tagged: int = Field(nullable=False)
    precision_cv: float = Field(nullable=False)
    threshold: float = Field(nullable=False)
    # What the examples were (a digest of the positive and negative image
    # ids and the extractor): a change makes the tag due for relearning.
    examples_digest: str = Field(sa_type=String(64), nullable=False)
    trained_at: datetime = _timestamp()


class TaughtImageTag(DatasetModel, table=True):
    """A taught tag on an image (its score passed the tag's threshold);
    never on an image that has the tag by hand or had it removed."""

    __tablename__ = "taught_image_tags"
    __table_args__ = (Index("ix_taught_image_tags_tag_score_image", "tag_id", "score", "image_id"),)

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    tag_id: int = Field(sa_column_args=[ForeignKey("tags.id", ondelete="CASCADE")], primary_key=True)
    score: float = Field(nullable=False)


# ---- the tags each image has, for intersections (see ``tags/members.py``) ----


class TagMember(DatasetModel, table=True):
    """Image ``image_id`` has tag ``tag_id`` from any source (the current
    tagger model at or above its threshold and not removed, by hand, or
    taught), the implications applied: what an any-source tag filter
    matches, one index range per tag. Kept in step by triggers on the
    source tables (``tags/members.py``); read only while
    ``tag_members_state`` says it is ready for the current tagger model."""

    __tablename__ = "tag_members"
    __table_args__ = {"sqlite_with_rowid": False}

    # No foreign keys: a row goes when the last source row behind it does
    # (an image's or a tag's deletion cascades to those), never before.
    tag_id: int = Field(primary_key=True)
    image_id: int = Field(primary_key=True)


class TagMembersState(DatasetModel, table=True):
    """One row (id 1): which tagger model and threshold ``tag_members`` was
    built for, and whether it is ready (false while a bulk load or a
    rebuild is under way, or before the first build)."""

    __tablename__ = "tag_members_state"

    id: int = Field(primary_key=True)
    ready: bool = Field(nullable=False)
    model_id: int | None = Field(default=None, nullable=True)
    threshold: float | None = Field(default=None, nullable=True)
    # A random number drawn at every rebuild: with ``tag_member_versions``,
    # what a cached copy of a tag's images is keyed by (``library/bitsets.py``).
    epoch: int = Field(default=0, sa_type=BigInteger, nullable=False)


class TagMemberVersion(DatasetModel, table=True):
    """How many times a tag's rows in ``tag_members`` changed since the
    last rebuild (a trigger counts them)."""

    __tablename__ = "tag_member_versions"

    tag_id: int = Field(primary_key=True)
    version: int = Field(sa_type=BigInteger, nullable=False)
