"""Reads about users: a user's ratings count and snapshots (GetUser), every
user's name, and a user's statistics (rating distribution, model
freshness). Plain functions that take a Session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, select

from ..models import ALL_SUBJECT, Rating, TrainedSnapshot, User
from ..records import require_user
from ..snapshots import ALL_SNAPSHOT_RE, all_snapshot, trained_snapshot, user_snapshot


@dataclass(frozen=True)
class UserSummary:
    user: str
    ratings: int
    snapshot_id: str
    trained_snapshot_id: str | None
    created_at: datetime | None


def user_summary(session: Session, name: str) -> UserSummary:
    """A user's ratings count, current and trained snapshot; ``all`` gives
    the global figures. NotFound for an unknown user."""
    if name == ALL_SUBJECT:
        snap, created = all_snapshot(session), None
    else:
        user = require_user(session, name)
        snap, created = user_snapshot(session, user), user.created_at
    trained = trained_snapshot(session, name)
    return UserSummary(name, snap.ratings, snap.snapshot_id, trained.snapshot_id if trained else None, created)


def user_snapshots(session: Session, only_untrained: bool = False) -> list[UserSummary]:
    """Every user's ratings count, current and trained snapshot (as
    :func:`user_summary`), sorted by name; with ``only_untrained`` only those
    whose current snapshot is not the trained one. Three queries whatever
    the number of users: the users, their rating counts, the trained
    snapshots."""
    users = session.exec(select(User.id, User.name, User.ratings_version, User.created_at)).all()
    counts = dict(session.exec(select(Rating.user_id, func.count()).group_by(Rating.user_id)).all())  # type: ignore[call-overload]
    trained = dict(
        session.exec(
            select(TrainedSnapshot.subject, TrainedSnapshot.snapshot_id).where(TrainedSnapshot.subject != ALL_SUBJECT)
        ).all()
    )
    found = []
    for user_id, name, version, created in users:
        count = int(counts.get(user_id, 0))
        snapshot_id = f"{user_id}:{version}:{count}"
        if only_untrained and trained.get(name) == snapshot_id:
            continue
        found.append(UserSummary(name, count, snapshot_id, trained.get(name), created))
    return sorted(found, key=lambda summary: summary.user)


def list_users(session: Session) -> list[str]:
    """Every user name, sorted (in Python: the same order on every database)."""
    return sorted(session.exec(select(User.name)).all())


@dataclass(frozen=True)
class UserStats:
    user: str
    image_count: int
    distribution: list[int]  # 7 buckets: round(rating * 6)
    personal_up_to_date: bool
    global_up_to_date: bool
    model: TrainedSnapshot | None


def user_stats(session: Session, name: str) -> UserStats:
    """A user's rated-image count, rating distribution and model freshness.
    Bucket k counts the ratings r with Python's ``round(r * 6) == k`` (half
    to even, as the original service computed it). NotFound for an unknown user.

    A handful of rows leave the database whatever the ratings (see
    :func:`_rating_buckets`), a snapshot is compared only when there is a
    trained model, and the global one without counting every rating (see
    :func:`_global_model_up_to_date`)."""
    user = require_user(session, name)
    distribution = [0] * 7
    for bucket, count in session.exec(_rating_buckets(user)):
        distribution[bucket] += int(count)  # PostgreSQL sums to a numeric
    trained, trained_all = trained_snapshot(session, name), trained_snapshot(session, ALL_SUBJECT)
    return UserStats(
        name,
        sum(distribution),
        distribution,
        trained is not None and trained.snapshot_id == user_snapshot(session, user).snapshot_id,
        _global_model_up_to_date(session, trained_all),
        trained,
    )


def _global_model_up_to_date(session: Session, trained: TrainedSnapshot | None) -> bool:
    """Whether the global model was trained on everyone's current ratings.
    Only the version part of the ids is compared: each user's version only
    grows, and grows with every change of their ratings (see the module
    docstring; no user is ever deleted), so an equal sum means unchanged
    ratings and hence the same count. Counting every rating to confirm it
    would scan the whole table (tens of ms on PostgreSQL at 500k ratings)."""
    if trained is None:
        return False
    match = ALL_SNAPSHOT_RE.fullmatch(trained.snapshot_id)
    versions = session.exec(select(func.coalesce(func.sum(User.ratings_version), 0))).one()
    return match is not None and int(match[1]) == versions


def _rating_buckets(user: User) -> Any:
    """(bucket, count) rows of ``user``'s ratings, bucket = Python's
    ``round(r * 6)`` clamped to 0..6. The ratings are grouped by value first
    (the ``(user_id, rating)`` index gives them in order) and only the
    distinct values are bucketed, so neither the user's ratings nor their
    distinct values (a thousand, with ratings given to three decimals) are
    sent to Python. ``r * 6`` is the same IEEE double product in SQLite,
    PostgreSQL and Python, and the ties (x.5) go to the even bucket as
    Python's round() sends them."""
    values = (
        select(Rating.rating.label("value"), func.count().label("n"))  # type: ignore[attr-defined]
        .where(Rating.user_id == user.id)
        .group_by(Rating.rating)
        .subquery()
    )
    x = values.c.value * 6
    bucket = case(
        (x <= 0.5, 0),
        (x < 1.5, 1),
        (x <= 2.5, 2),
        (x < 3.5, 3),
        (x <= 4.5, 4),
        (x < 5.5, 5),
        else_=6,
    ).label("bucket")
    return select(bucket, func.sum(values.c.n)).group_by(bucket)
