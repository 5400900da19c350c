"""Snapshot ids name the ratings a model was trained on. A user's is
``"<user id>:<ratings_version>:<ratings count>"``; ``ratings_version`` is
bumped in the same transaction as every insert, value change or removal of
one of their ratings (a deleted image removes its ratings), so the id
changes exactly when their ratings do. The global
("all") id is ``"all:<sum of every version>:<total ratings>"``. The count is
part of the id so that recording a snapshot after more ratings arrived still
stores the count the model was actually trained on.

Shared by the resources that change ratings (ratings; images, whose
deletion removes ratings) and those that read or record snapshots (users,
training data)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, update
from sqlmodel import Session, select

from .models import ALL_SUBJECT, Rating, TrainedSnapshot, User

USER_SNAPSHOT_RE = re.compile(r"(\d{1,18}):(\d{1,18}):(\d{1,18})")


ALL_SNAPSHOT_RE = re.compile(r"all:(\d{1,18}):(\d{1,18})")


def bump_versions(session: Session, which: ColumnElement[bool]) -> None:
    # An increment in SQL, not in Python: concurrent raters of the same
    # user must each move the version.
    session.exec(update(User).where(which).values(ratings_version=User.ratings_version + 1))


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: str
    ratings: int


def user_snapshot(session: Session, user: User) -> Snapshot:
    """The snapshot id of the user's ratings as this session sees them."""
    count = session.exec(select(func.count()).select_from(Rating).where(Rating.user_id == user.id)).one()
    version = session.exec(select(User.ratings_version).where(User.id == user.id)).one()
    return Snapshot(f"{user.id}:{version}:{count}", count)


def all_snapshot(session: Session) -> Snapshot:
    """The snapshot id of every user's ratings together."""
    versions = session.exec(select(func.coalesce(func.sum(User.ratings_version), 0))).one()
    count = session.exec(select(func.count()).select_from(Rating)).one()
    return Snapshot(f"{ALL_SUBJECT}:{versions}:{count}", count)


def trained_snapshot(session: Session, subject: str) -> TrainedSnapshot | None:
    return session.get(TrainedSnapshot, subject)
