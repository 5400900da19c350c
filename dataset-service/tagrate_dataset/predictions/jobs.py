"""Rescoring jobs: every stored image to be scored for a subject (a user,
or ``all``) by a model version, queued when a model is recorded as trained
or a user is created, and worked off by the background scorer
(``scoring.py``)."""

from __future__ import annotations

from sqlmodel import Session

from ..db import upsert
from ..models import PredictionJob, utc_now


def queue_rescoring(session: Session, subject: str, model_version: str) -> None:
    """Queues every stored image to be scored for ``subject`` (a user, or
    ``all``) by ``model_version``, replacing (restarting) a job queued for
    an older model: the background scorer (``scoring.py``) works it off."""
    values = {"subject": subject, "model_version": model_version, "after_image_id": 0, "enqueued_at": utc_now()}
    upsert(session, PredictionJob, values, ["subject"])
