"""Predicted ratings and the jobs that score them (``predictions/``)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlmodel import Field

from .base import DatasetModel, _timestamp


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
