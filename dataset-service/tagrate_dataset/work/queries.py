"""The datasets' state that VerifyDatasets reports: per user, whether their
model is trained on their current ratings; how many images the current
tagger has not tagged; the background work owed per kind and the items
parked as failed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import exists, func
from sqlmodel import Session, select

from ..models import Image, ImageTagging, Rating, TrainedSnapshot, User, WorkKind, WorkState
from ..records import current_tagger_model
from . import queue as workqueue


@dataclass(frozen=True)
class UserDatasetState:
    user: str
    ratings: int
    last_rating_at: datetime | None
    snapshot_id: str
    trained: TrainedSnapshot | None

    @property
    def model_up_to_date(self) -> bool:
        return self.trained is not None and self.trained.snapshot_id == self.snapshot_id


@dataclass(frozen=True)
class WorkQueueState:
    kind: str
    pending: int
    failed: int


@dataclass(frozen=True)
class DatasetsState:
    users: list[UserDatasetState]
    untagged_images: int
    work: list[WorkQueueState]  # every kind, in WorkKind's order
    failed_work: list[workqueue.FailedWork]  # the first few parked items

    @property
    def valid(self) -> bool:
        """Every user with ratings has a model trained on exactly them."""
        return all(state.model_up_to_date for state in self.users if state.ratings)


def verify_datasets(session: Session, failed_listed: int) -> DatasetsState:
    """Per user (sorted by name): ratings, last rating time, current and
    trained snapshot; plus how many images the current tagger has not tagged,
    the background work owed per kind, and up to ``failed_listed`` parked
    work items by name."""
    per_user = session.exec(
        select(User.id, User.name, User.ratings_version, func.count(Rating.image_id), func.max(Rating.rated_at))
        .select_from(User)
        .outerjoin(Rating, Rating.user_id == User.id)
        .group_by(User.id, User.name, User.ratings_version)
    ).all()
    trained = {row.subject: row for row in session.exec(select(TrainedSnapshot)).all()}
    users = [
        UserDatasetState(name, count, last, f"{uid}:{version}:{count}", trained.get(name))
        for uid, name, version, count, last in sorted(per_user, key=lambda row: row[1])
    ]
    counts = workqueue.counts(session)
    work = [
        WorkQueueState(kind.value, counts.get((kind, WorkState.PENDING), 0), counts.get((kind, WorkState.FAILED), 0))
        for kind in WorkKind
    ]
    return DatasetsState(users, untagged_images_count(session), work, workqueue.failed(session, failed_listed))


def untagged_images_count(session: Session) -> int:
    """Images without a tagging by the current tagger model (all of them
    when no model is registered yet)."""
    model = current_tagger_model(session)
    stmt = select(func.count()).select_from(Image)
    if model is not None:
        tagged = exists().where(ImageTagging.image_id == Image.id, ImageTagging.tagger_model_id == model.id)
        stmt = stmt.where(~tagged)
    return session.exec(stmt).one()
