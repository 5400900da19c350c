"""The dataset service's tables (SQLModel). The schema itself is created and
changed only by the Alembic migrations in ``migrations/``; a test checks that
these models and the migrations agree.

Indexes exist for the GetUserData query (see ``library/``): tag filters are
driven from ``image_tags(tagger_model_id, tag_id, score, image_id)``, and a
user's ratings are reached through ``(user_id, rated_at)``, ``(user_id,
rating)`` and the primary key ``(user_id, image_id)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from tagrate_common.database import model_registry


class DatasetModel(SQLModel, registry=model_registry()):
    """The base of the dataset service's tables: their own metadata (with
    the shared constraint naming convention), which the migrations compare
    against, apart from any other service's tables in the same process."""


# The longest ``images.source`` kept.
SOURCE_MAX_CHARS = 2048

# Snapshot subject and GetUser name for the global (every user) dataset.
ALL_SUBJECT = "all"


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are UTC everywhere: stored as ``timestamptz`` on PostgreSQL
    and as naive UTC text on SQLite (which has no time zones, and whose text
    form sorts chronologically), always read back as aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp(**kw: Any) -> Any:
    return Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False, **kw)


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


class WorkKind(StrEnum):
    """Background work a stored image needs (see ``work/queue.py``)."""

    TAG = "tag"  # scores from the current tagger model
    EMBED = "embed"  # a feature vector from the rater's current extractor
    HASH = "hash"  # a perceptual hash (images stored before hashes were made at upload)


class WorkState(StrEnum):
    PENDING = "pending"
    # The model refused the image, or failed on it ``work_max_attempts``
    # times; retried when the model changes or on request (RetryFailedWork).
    FAILED = "failed"


class WorkItem(DatasetModel, table=True):
    """One image's outstanding background work of one kind. A row exists
    only while the work is due (or failed): finishing it deletes the row."""

    __tablename__ = "work_items"
    __table_args__ = (
        # Drives the claim query: pending work of one kind, oldest image first.
        Index("ix_work_items_kind_state_image", "kind", "state", "image_id"),
    )

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    kind: str = Field(sa_type=String(16), primary_key=True)
    state: str = Field(default=WorkState.PENDING, sa_type=String(16), nullable=False)
    enqueued_at: datetime = _timestamp()
    # A worker that claimed the item holds it until then; a crashed worker's
    # claim simply runs out and another worker (or replica) takes the item.
    leased_until: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)
    # For failed work: the model or extractor that refused the image, and why.
    failed_by: str = Field(default="", sa_type=String(200), nullable=False)
    # The last failure (also of pending work that is to be tried again).
    error: str = Field(default="", sa_type=String(500), nullable=False)
    # Claims so far that did not complete: each claim counts one, a claim
    # given back because the service was merely busy does not. Work that
    # failed before is claimed alone, and parked as failed at the limit.
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"}, nullable=False)
    # Pending work that failed is not due before then (its own backoff).
    retry_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class TrainedSnapshot(DatasetModel, table=True):
    """The snapshot a subject's current model was trained on; one row per
    subject (a user name, or ``all`` for the global model), replaced."""

    __tablename__ = "trained_snapshots"

    subject: str = Field(sa_type=String(64), primary_key=True)
    snapshot_id: str = Field(sa_type=String(100), nullable=False)
    ratings_count: int = Field(nullable=False)
    model_version: str = Field(default="", sa_type=String(200), nullable=False)
    trained_at: datetime = _timestamp()
    # The model's evaluation metrics as the trainer reported them (GetStats).
    metrics: dict[str, float] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class AccessToken(DatasetModel, table=True):
    """A gateway access token: its SHA-256 hash (never the secret), whom it
    acts for, and when it stops working. Revoking deletes the row."""

    __tablename__ = "access_tokens"

    # Public id (DELETE /tokens/{id}); random, unrelated to the secret.
    id: str = Field(sa_type=String(32), primary_key=True)
    # Lowercase hex SHA-256 of the secret: a lookup key for high-entropy
    # tokens (guessing a 128-bit secret is as hard as guessing its hash).
    token_sha256: str = Field(sa_type=String(64), unique=True, nullable=False)
    # NULL for an admin token.
    user: str | None = Field(default=None, sa_type=String(64), nullable=True)
    admin: bool = Field(default=False, nullable=False)
    created_at: datetime = _timestamp()
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, nullable=True)


class BrowserSession(DatasetModel, table=True):
    """A browser session (the gateway's ``tagrate_session`` cookie): the
    SHA-256 of its random id (never the id), the token it acts for (deleting
    the token deletes its sessions), and when it ends."""

    __tablename__ = "browser_sessions"
    __table_args__ = (Index("ix_browser_sessions_token_id", "token_id"),)

    session_sha256: str = Field(sa_type=String(64), primary_key=True)
    # NULL for a session of the bootstrap admin token (not stored here).
    token_id: str | None = Field(
        default=None,
        sa_type=String(32),
        sa_column_args=[ForeignKey("access_tokens.id", ondelete="CASCADE")],
        nullable=True,
    )
    # SHA-256 of the bootstrap admin token's hash, for such a session; "" otherwise.
    bootstrap_check: str = Field(default="", sa_type=String(64), nullable=False)
    created_at: datetime = _timestamp()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class PredictedBy(StrEnum):
    """Which of the user's models a stored prediction came from."""

    PERSONAL = "personal"
    GLOBAL = "global"


class Prediction(DatasetModel, table=True):
    """The rating a user's model predicts for a stored image, computed from
    the image's cached feature vector. One row per (user, image), replaced
    when a model scores it again; a row counts only while its
    ``model_version`` is the version that serves the user now (the user's
    own trained snapshot's, else the global one's), so a stale score is
    never shown as current (see ``predictions/scoring.py``)."""

    __tablename__ = "predictions"
    __table_args__ = (
        # Sorting a user's listing by prediction walks this index.
        Index("ix_predictions_user_score", "user_id", "score"),
        # Deleting an image (and its scoring) reaches its rows.
        Index("ix_predictions_image", "image_id"),
    )

    user_id: int = Field(sa_column_args=[ForeignKey("users.id", ondelete="CASCADE")], primary_key=True)
    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    score: float = Field(nullable=False)
    model_version: str = Field(sa_type=String(200), nullable=False)
    predicted_by: str = Field(sa_type=String(16), nullable=False)
    scored_at: datetime = _timestamp()


class PredictionJob(DatasetModel, table=True):
    """Durable rescoring work: every stored image is to be scored for
    ``subject`` (a user, or ``all``: every user without a personal model)
    by the model ``model_version``. Images are scored in id order and
    ``after_image_id`` moves in the same transaction as each chunk's rows,
    so a crash or an outage resumes where the last chunk ended. A newer
    publish replaces the job (starting over); the finished job is deleted."""

    __tablename__ = "prediction_jobs"

    subject: str = Field(sa_type=String(64), primary_key=True)
    model_version: str = Field(sa_type=String(200), nullable=False)
    after_image_id: int = Field(default=0, nullable=False)
    enqueued_at: datetime = _timestamp()


class PendingScore(DatasetModel, table=True):
    """A stored image whose feature vector was cached and which is still to
    be scored for every user with a model (written in the same transaction
    as the vector, deleted with the scores)."""

    __tablename__ = "pending_scores"

    image_id: int = Field(sa_column_args=[ForeignKey("images.id", ondelete="CASCADE")], primary_key=True)
    enqueued_at: datetime = _timestamp()


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
