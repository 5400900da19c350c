"""Database operations of the dataset service: plain functions that take a
Session and raise :mod:`tagrate_common.errors` exceptions. Transactions
(commit, retry after a lost race) are the caller's, see :class:`db.Database`.
The GetUserData query lives in ``queries.py``.

Snapshot ids name the ratings a model was trained on. A user's is
``"<user id>:<ratings_version>:<ratings count>"``; ``ratings_version`` is
bumped in the same transaction as every insert, value change or removal of
one of their ratings (a deleted image removes its ratings), so the id
changes exactly when their ratings do. The global
("all") id is ``"all:<sum of every version>:<total ratings>"``. The count is
part of the id so that recording a snapshot after more ratings arrived still
stores the count the model was actually trained on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, case, delete, exists, func, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, SQLModel, select

from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.images import ImageInfo

from .models import (
    ALL_SUBJECT,
    Image,
    ImageFeatures,
    ImageTag,
    ImageTagging,
    PendingScore,
    Prediction,
    PredictionJob,
    Rating,
    Tag,
    TaggerModel,
    TrainedSnapshot,
    User,
    WorkItem,
    WorkKind,
    WorkState,
    utc_now,
)
from .work import queue as workqueue

MAX_ID_CHARS = 200  # model ids, extractor ids, model versions (the columns' width)
_USER_SNAPSHOT_RE = re.compile(r"(\d{1,18}):(\d{1,18}):(\d{1,18})")
_ALL_SNAPSHOT_RE = re.compile(r"all:(\d{1,18}):(\d{1,18})")


# ---- shared helpers -------------------------------------------------------


def upsert(session: Session, model: type[SQLModel], values: Mapping[str, Any], key: Sequence[str]) -> None:
    """INSERT ... ON CONFLICT (key) DO UPDATE: one statement, no race between
    looking and writing. Works on SQLite and PostgreSQL."""
    table: Table = model.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    changes = {name: stmt.excluded[name] for name in values if name not in key}
    session.exec(stmt.on_conflict_do_update(index_elements=list(key), set_=changes))


def insert_missing(session: Session, model: type[SQLModel], rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: rows that already exist (or that a
    concurrent transaction just inserted) are skipped instead of failing."""
    if not rows:
        return
    table: Table = model.__table__  # type: ignore[attr-defined]
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    session.exec(dialect.insert(table).values(list(rows)).on_conflict_do_nothing())


def find_user(session: Session, name: str) -> User | None:
    return session.exec(select(User).where(User.name == name)).first()


def require_user(session: Session, name: str) -> User:
    """The user called ``name``; NotFound when there is none."""
    user = find_user(session, name)
    if user is None:
        raise NotFound(f"there is no user '{name}'; a user is created by their first rating", "user_not_found")
    return user


def find_image(session: Session, name: str) -> Image | None:
    return session.exec(select(Image).where(Image.name == name)).first()


def require_image(session: Session, name: str) -> Image:
    """The stored image called ``name``; NotFound when there is none."""
    image = find_image(session, name)
    if image is None:
        raise NotFound(f"there is no stored image '{name}'", "image_not_found")
    return image


def current_tagger_model(session: Session) -> TaggerModel | None:
    """The most recently registered tagger model, or None before any."""
    stmt = select(TaggerModel).order_by(TaggerModel.registered_at.desc(), TaggerModel.id.desc()).limit(1)
    return session.exec(stmt).first()


def identifier(value: str, param: str) -> str:
    """A model/extractor id: non-empty, at most 200 characters, printable."""
    if not value:
        raise InvalidArgument(f"the '{param}' parameter is required", "missing_parameter")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(f"'{param}' must be at most {MAX_ID_CHARS} printable characters", "invalid_parameter")
    return value


def score(value: float, param: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"'{param}' must be a finite number, got {value!r}", "invalid_parameter")
    return float(value)


# ---- ratings --------------------------------------------------------------


@dataclass(frozen=True)
class AddRatingOutcome:
    image: str
    user: str
    rating: float
    new_image: bool
    new_user: bool
    changed: bool  # the stored value is new or different (the snapshot moved)


def add_rating(
    session: Session, user_name: str, info: ImageInfo, original_filename: str, value: float
) -> AddRatingOutcome:
    """Creates the user and the image row if needed and inserts or updates
    the rating (``rated_at`` = now). ``ratings_version`` is bumped only when
    the rating is new or its value changed. The image's blob must already be
    stored. A concurrent call creating the same user, image or rating makes
    the flush fail with IntegrityError: the caller retries the transaction."""
    now = utc_now()
    user, new_user = _user_or_new(session, user_name, now)
    image = session.exec(select(Image).where(Image.sha256 == info.sha256)).first()
    new_image = image is None
    if image is None:
        image = _new_image(session, info, original_filename, now)
    previous = _set_rating(session, user, image, value, now)
    return AddRatingOutcome(image.name, user.name, value, new_image, new_user, previous != value)


def _user_or_new(session: Session, name: str, now: datetime) -> tuple[User, bool]:
    user = find_user(session, name)
    if user is not None:
        return user, False
    user = User(name=name, created_at=now)
    session.add(user)
    session.flush()
    # A new user has no model of their own: the global model's scores are
    # theirs until they have one.
    global_model = trained_snapshot(session, ALL_SUBJECT)
    if global_model is not None and global_model.model_version:
        queue_rescoring(session, name, global_model.model_version)
    return user, True


def _set_rating(session: Session, user: User, image: Image, value: float, now: datetime) -> float | None:
    """Inserts or updates the rating (``rated_at`` = now), bumping the
    user's ``ratings_version`` when the value is new or different; returns
    the previous value (None: there was none)."""
    assert user.id is not None and image.id is not None
    rating = session.get(Rating, (user.id, image.id))
    previous = rating.rating if rating is not None else None
    if rating is None:
        session.add(Rating(user_id=user.id, image_id=image.id, rating=value, rated_at=now))
    else:
        rating.rating = value
        rating.rated_at = now
    session.flush()
    if previous != value:
        _bump_versions(session, User.id == user.id)
    return previous


def _bump_versions(session: Session, which: ColumnElement[bool]) -> None:
    # An increment in SQL, not in Python: concurrent raters of the same
    # user must each move the version.
    session.exec(update(User).where(which).values(ratings_version=User.ratings_version + 1))


@dataclass(frozen=True)
class UpdateRatingOutcome:
    image: str
    user: str
    rating: float
    previous: float | None
    new_user: bool


def update_rating(session: Session, user_name: str, image_name: str, value: float) -> UpdateRatingOutcome:
    """Sets the user's rating of a stored image (insert or update), creating
    the user if needed. NotFound for an unknown image (nothing created)."""
    now = utc_now()
    image = require_image(session, image_name)
    user, new_user = _user_or_new(session, user_name, now)
    previous = _set_rating(session, user, image, value, now)
    return UpdateRatingOutcome(image.name, user.name, value, previous, new_user)


def remove_rating(session: Session, user_name: str, image_name: str) -> float:
    """Removes the user's rating of the image (the image stays) and returns
    the removed value. NotFound for an unknown user or image, or an image
    the user has not rated."""
    user = require_user(session, user_name)
    image = require_image(session, image_name)
    rating = session.get(Rating, (user.id, image.id))
    if rating is None:
        raise NotFound(f"user '{user_name}' has not rated image '{image_name}'", "rating_not_found")
    value = rating.rating
    session.delete(rating)
    session.flush()
    _bump_versions(session, User.id == user.id)
    return value


@dataclass(frozen=True)
class DeletedImage:
    image: str
    format: str
    ratings_removed: int


def delete_image(session: Session, name: str) -> DeletedImage:
    """Deletes every row of the image: its ratings (moving each rater's
    snapshot), tags, taggings, feature vectors, queued work and the image
    row itself. The files are the caller's, after the commit."""
    image = require_image(session, name)
    image_id = image.id
    raters = select(Rating.user_id).where(Rating.image_id == image_id)
    _bump_versions(session, User.id.in_(raters))  # type: ignore[union-attr]
    removed = session.exec(select(func.count()).select_from(Rating).where(Rating.image_id == image_id)).one()
    # Explicit deletes rather than ON DELETE CASCADE alone: the same on a
    # SQLite database opened without foreign keys.
    for model in (Rating, ImageTag, ImageTagging, ImageFeatures, WorkItem, Prediction, PendingScore):
        session.exec(delete(model).where(model.image_id == image_id))  # type: ignore[attr-defined]
    session.exec(delete(Image).where(Image.id == image_id))  # type: ignore[arg-type]
    return DeletedImage(name, image.format, removed)


def add_images(session: Session, images: Sequence[tuple[ImageInfo, str]], source: str) -> list[tuple[str, bool]]:
    """Creates the rows of images not stored yet (``(info, original
    filename)``, blobs already stored), queueing their tagging and feature
    extraction; an image already stored keeps its row, and gets ``source``
    when it had none. Returns (name, new) per image, in order."""
    now = utc_now()
    out: list[tuple[str, bool]] = []
    for info, filename in images:
        image = session.exec(select(Image).where(Image.sha256 == info.sha256)).first()
        if image is not None:
            if source and not image.source:
                image.source = source
                session.flush()
            out.append((image.name, False))
            continue
        image = _new_image(session, info, filename, now, source)
        out.append((image.name, True))
    return out


def _new_image(session: Session, info: ImageInfo, filename: str, now: datetime, source: str = "") -> Image:
    image = Image(
        sha256=info.sha256,
        name=info.name,
        format=info.format,
        size_bytes=info.size_bytes,
        width=info.width,
        height=info.height,
        original_filename=filename[:255],
        created_at=now,
        source=source,
    )
    session.add(image)
    session.flush()
    assert image.id is not None
    # In the image's own transaction: a stored image always has its
    # tagging and feature extraction queued (see workqueue.py).
    session.add_all([WorkItem(image_id=image.id, kind=kind, enqueued_at=now) for kind in WorkKind])
    return image


def existing_image_ids(session: Session, image_ids: Iterable[int]) -> set[int]:
    """Those of ``image_ids`` whose image is still stored (not deleted)."""
    wanted = sorted(set(image_ids))
    found: set[int] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(session.exec(select(Image.id).where(Image.id.in_(chunk))).all())  # type: ignore[union-attr,arg-type]
    return found


def existing_image_shas(session: Session, shas: Iterable[str]) -> set[str]:
    """Those of ``shas`` that name a stored image."""
    wanted = sorted(set(shas))
    found: set[str] = set()
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(session.exec(select(Image.sha256).where(Image.sha256.in_(chunk))).all())  # type: ignore[attr-defined]
    return found


# ---- users and snapshots --------------------------------------------------


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


def list_users(session: Session) -> list[str]:
    """Every user name, sorted (in Python: the same order on every database)."""
    return sorted(session.exec(select(User.name)).all())


def record_trained_snapshot(
    session: Session, subject: str, snapshot_id: str, model_version: str, metrics: Mapping[str, float] | None = None
) -> TrainedSnapshot:
    """Records that ``subject``'s model (a user's, or ``all``) was trained on
    ``snapshot_id``, replacing the previous record. NotFound for an unknown
    user; InvalidArgument for an id that is not one of the subject's
    snapshots (malformed, another user's, or newer than the current one)."""
    problem = InvalidArgument(
        f"'snapshot_id' {snapshot_id[:120]!r} is not a snapshot of '{subject}'; "
        "use the id StreamTrainingData or GetUser returned",
        "invalid_snapshot_id",
    )
    if subject == ALL_SUBJECT:
        match = _ALL_SNAPSHOT_RE.fullmatch(snapshot_id)
        if match is None:
            raise problem
        version, count = int(match[1]), int(match[2])
        current_version = session.exec(select(func.coalesce(func.sum(User.ratings_version), 0))).one()
    else:
        user = require_user(session, subject)
        match = _USER_SNAPSHOT_RE.fullmatch(snapshot_id)
        if match is None or int(match[1]) != user.id:
            raise problem
        version, count = int(match[2]), int(match[3])
        current_version = user.ratings_version
    if version > current_version or count > version:
        # From the future (forged, or another database's), or impossible:
        # every rating counted was an insert that bumped the version.
        raise problem
    if len(model_version) > MAX_ID_CHARS:
        raise InvalidArgument(f"'model_version' must be at most {MAX_ID_CHARS} characters", "invalid_parameter")
    now = utc_now()
    values = {
        "subject": subject,
        "snapshot_id": snapshot_id,
        "ratings_count": count,
        "model_version": model_version,
        "trained_at": now,
        "metrics": dict(metrics or {}),
    }
    upsert(session, TrainedSnapshot, values, ["subject"])
    if model_version:
        queue_rescoring(session, subject, model_version)
    return TrainedSnapshot(**values)


def queue_rescoring(session: Session, subject: str, model_version: str) -> None:
    """Queues every stored image to be scored for ``subject`` (a user, or
    ``all``) by ``model_version``, replacing (restarting) a job queued for
    an older model: the background scorer (``scoring.py``) works it off."""
    values = {"subject": subject, "model_version": model_version, "after_image_id": 0, "enqueued_at": utc_now()}
    upsert(session, PredictionJob, values, ["subject"])


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
    match = _ALL_SNAPSHOT_RE.fullmatch(trained.snapshot_id)
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


# ---- tags -----------------------------------------------------------------


def normalise_tag(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class ImageTags:
    image: str
    tagged: bool
    model_id: str
    tags: list[tuple[str, float]]  # highest score first
    source: str = ""


def image_tags(session: Session, name: str) -> ImageTags:
    """The current tagger model's tags of an image at or above its threshold,
    highest score first (ties by name). NotFound for an unknown image."""
    image = require_image(session, name)
    model = current_tagger_model(session)
    if model is None:
        return ImageTags(name, False, "", [], image.source)
    if session.get(ImageTagging, (image.id, model.id)) is None:
        return ImageTags(name, False, model.model_id, [], image.source)
    rows = session.exec(
        select(Tag.name, ImageTag.score)
        .join(Tag, Tag.id == ImageTag.tag_id)
        .where(ImageTag.image_id == image.id, ImageTag.tagger_model_id == model.id, ImageTag.score >= model.threshold)
        .order_by(ImageTag.score.desc(), Tag.name)
    ).all()
    return ImageTags(name, True, model.model_id, [(tag, score) for tag, score in rows], image.source)


def tag_scores(pairs: Iterable[tuple[str, float]], max_chars: int) -> dict[str, float]:
    """Validated tag scores keyed by normalised (trimmed, lowercase) name; a
    name given twice keeps its highest score."""
    scores: dict[str, float] = {}
    for raw, value in pairs:
        name = normalise_tag(raw)
        if not name or len(name) > max_chars:
            raise InvalidArgument(f"tag names must be 1-{max_chars} characters, got {raw[:60]!r}", "invalid_tag")
        checked = score(value, f"score of tag '{name[:60]}'")
        scores[name] = max(checked, scores.get(name, checked))
    return scores


def tag_ids(session: Session, names: Iterable[str]) -> dict[str, int]:
    """The ids of the named tags, creating the missing ones."""
    wanted = sorted(set(names))  # sorted: concurrent inserters lock in one order, no deadlock
    insert_missing(session, Tag, [{"name": name} for name in wanted])
    ids: dict[str, int] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        ids.update({name: tag_id for tag_id, name in session.exec(select(Tag.id, Tag.name).where(Tag.name.in_(chunk)))})
    return ids


def register_tagger_model(session: Session, model_id: str, threshold: float) -> TaggerModel:
    """The model's row, created (becoming the current model) if new; a known
    model's threshold is updated to the one given."""
    insert_missing(session, TaggerModel, [{"model_id": model_id, "threshold": threshold, "registered_at": utc_now()}])
    model = session.exec(select(TaggerModel).where(TaggerModel.model_id == model_id)).one()
    if model.threshold != threshold:
        model.threshold = threshold
        session.flush()
    return model


def use_tagger_model(session: Session, model_id: str, threshold: float) -> TaggerModel:
    """Registers the model the tagger runs now (with its threshold) and makes
    it the current model, also when it was registered before and another one
    came after it (a tagger rolled back to an older model)."""
    model = register_tagger_model(session, model_id, threshold)
    current = current_tagger_model(session)
    if current is not None and current.id != model.id:
        # Strictly later than the current one, even if clocks disagree.
        model.registered_at = max(utc_now(), current.registered_at + timedelta(microseconds=1))
        session.flush()
    return model


def put_image_tags(
    session: Session, name: str, model_id: str, threshold: float, scores: Mapping[str, float]
) -> TaggerModel:
    """Replaces ``model_id``'s scores for the image with ``scores`` (already
    normalised, see :func:`tag_scores`) and records that the model tagged it.
    NotFound for an unknown image."""
    image = require_image(session, name)
    model = register_tagger_model(session, model_id, threshold)
    ids = tag_ids(session, scores)
    session.exec(delete(ImageTag).where(and_(ImageTag.image_id == image.id, ImageTag.tagger_model_id == model.id)))
    if scores:
        rows = [
            {"image_id": image.id, "tagger_model_id": model.id, "tag_id": ids[tag], "score": value}
            for tag, value in scores.items()
        ]
        session.exec(ImageTag.__table__.insert(), params=rows)  # type: ignore[attr-defined]
    upsert(
        session,
        ImageTagging,
        {"image_id": image.id, "tagger_model_id": model.id, "tagged_at": utc_now()},
        ["image_id", "tagger_model_id"],
    )
    return model


# ---- feature vectors ------------------------------------------------------


def put_image_features(session: Session, name: str, extractor_id: str, vector: bytes, dim: int) -> None:
    """Stores (or replaces) the image's float32 little-endian feature vector
    from ``extractor_id``. NotFound for an unknown image."""
    image = require_image(session, name)
    values = {"image_id": image.id, "extractor_id": extractor_id, "dim": dim, "vector": vector, "created_at": utc_now()}
    upsert(session, ImageFeatures, values, ["image_id", "extractor_id"])
    # Scored for every user with a model once the vector is there (scoring.py).
    insert_missing(session, PendingScore, [{"image_id": image.id, "enqueued_at": utc_now()}])
