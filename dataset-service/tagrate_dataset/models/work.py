"""Background work on new images (``work/``) and the training snapshots
(``snapshots.py``, ``training/``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Column, ForeignKey, Index, String
from sqlmodel import Field

from .base import DatasetModel, UTCDateTime, _timestamp


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
