"""The durable work queue: which stored images still need tags from the
tagger's current model or a feature vector from the rater's current
extractor. Plain functions that take a Session (transactions are the
caller's, see :class:`db.Database`).

A ``work_items`` row is written in the same transaction as the image row it
belongs to (see ``records.new_image``), so no stored image can miss its work,
and it is deleted in the same transaction that stores the result, so no
result is stored twice by accident. Work is keyed to no model: it means "the
current one". When the tagger or the rater starts running another model,
:func:`enqueue_missing` queues every image that lacks that model's result
(images tagged by an older model count as untagged) and gives images an
older model refused another chance.

Workers claim items with a lease (``leased_until``) rather than a lock held
across the model call, so several replicas can drain one queue and a worker
that dies mid-batch only delays its items until the lease runs out.
PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` so concurrent claimers do
not wait for each other; SQLite serialises writers anyway.

Poison work: every claim counts an attempt (``attempts``), so even an image
that kills the model service, or the worker itself, mid-call is charged for
it. Work whose call failed is given back with its own backoff
(:func:`retry_later`: due again at ``retry_at``) and is then claimed alone,
before fresh work, so a poison image fails by itself and the images batched
with it go through; after ``max_attempts`` it is parked FAILED with the
error, like work a model refused. Parked work is tried again only when a new
model runs, or on request (:func:`retry_failed`). Work given back because
the service was merely busy (:func:`release`) is not charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, and_, case, delete, exists, func, literal, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from ..models import Image, ImageFeatures, ImageHash, ImageTagging, TaggerModel, WorkItem, WorkKind, WorkState, utc_now
from ..records import StoredImage

MAX_ERROR_CHARS = 500  # the error column's width


def _done(kind: WorkKind, model_key: str) -> ColumnElement[bool]:
    """Whether ``Image`` already has the result ``model_key`` (a tagger
    model id or an extractor id) would produce: a correlated EXISTS."""
    if kind is WorkKind.TAG:
        return exists().where(
            ImageTagging.image_id == Image.id,
            ImageTagging.tagger_model_id == TaggerModel.id,
            TaggerModel.model_id == model_key,
        )
    if kind is WorkKind.HASH:  # one hash algorithm: any hash is the result
        return exists().where(ImageHash.image_id == Image.id)
    return exists().where(ImageFeatures.image_id == Image.id, ImageFeatures.extractor_id == model_key)


def _due(kind: WorkKind) -> ColumnElement[bool]:
    now = utc_now()
    return and_(
        WorkItem.kind == kind,
        WorkItem.state == WorkState.PENDING,
        or_(WorkItem.leased_until.is_(None), WorkItem.leased_until < now),  # type: ignore[union-attr]
        or_(WorkItem.retry_at.is_(None), WorkItem.retry_at <= now),  # type: ignore[union-attr]
    )


def has_due(session: Session, kind: WorkKind) -> bool:
    """Whether any pending, unclaimed work of ``kind`` exists (one index probe)."""
    return session.exec(select(literal(1)).where(_due(kind)).limit(1)).first() is not None


@dataclass(frozen=True)
class Claim:
    images: list[StoredImage]  # leased to the caller
    already_done: int  # items found done (e.g. by /updatetags) and completed

    def __len__(self) -> int:
        return len(self.images) + self.already_done


def claim(session: Session, kind: WorkKind, limit: int, lease_seconds: float, model_key: str) -> Claim:
    """Up to ``limit`` due items of ``kind``, oldest image first, leased to
    the caller for ``lease_seconds``, each charged one attempt. Work that
    failed before is claimed alone, ahead of fresh work. Items whose image
    already has ``model_key``'s result (/updatetags got there first) are
    completed instead of leased."""

    def due(retried: ColumnElement[bool], count: int) -> Sequence[tuple[int, str, bool]]:
        stmt = (
            select(WorkItem.image_id, Image.name, _done(kind, model_key))
            .join(Image, Image.id == WorkItem.image_id)
            .where(_due(kind), retried)
            .order_by(WorkItem.image_id)
            .limit(count)
            .with_for_update(skip_locked=True, of=WorkItem)  # type: ignore[arg-type]
        )
        return session.exec(stmt).all()  # type: ignore[return-value]

    rows = due(WorkItem.attempts > 0, 1) or due(WorkItem.attempts == 0, limit)  # type: ignore[arg-type]
    done = [image_id for image_id, _, is_done in rows if is_done]
    claimed = [StoredImage(image_id, name) for image_id, name, is_done in rows if not is_done]
    complete(session, kind, done)
    if claimed:
        until = utc_now() + timedelta(seconds=lease_seconds)
        session.exec(
            update(WorkItem)
            .where(WorkItem.kind == kind, WorkItem.image_id.in_([image.image_id for image in claimed]))  # type: ignore[attr-defined]
            .values(leased_until=until, attempts=WorkItem.attempts + 1)
        )
    return Claim(claimed, len(done))


def release(session: Session, kind: WorkKind, image_ids: Sequence[int]) -> None:
    """Gives claimed items back uncharged (the model service was busy, or
    swapped its model; nothing says the images are to blame): due again at
    once, for whichever worker comes next."""
    if image_ids:
        session.exec(
            update(WorkItem)
            .where(WorkItem.kind == kind, WorkItem.image_id.in_(image_ids))  # type: ignore[attr-defined]
            .values(leased_until=None, attempts=case((WorkItem.attempts > 0, WorkItem.attempts - 1), else_=0))
        )


@dataclass(frozen=True)
class Retry:
    """What :func:`retry_later` did with one item."""

    image: str
    attempts: int
    parked: bool  # FAILED for good (until retried on request or a new model)
    retry_in: float  # seconds until it is due again (0 when parked)


def retry_later(
    session: Session,
    kind: WorkKind,
    image_ids: Sequence[int],
    model_key: str,
    error: str,
    max_attempts: int,
    retry_seconds: float,
) -> list[Retry]:
    """Gives claimed items back after their model call failed: each keeps
    ``error`` and is due again after ``retry_seconds`` doubled per earlier
    attempt, or, once it used ``max_attempts``, is parked FAILED by
    ``model_key``."""
    rows = session.exec(
        select(WorkItem.image_id, Image.name, WorkItem.attempts)
        .join(Image, Image.id == WorkItem.image_id)
        .where(WorkItem.kind == kind, WorkItem.state == WorkState.PENDING, WorkItem.image_id.in_(image_ids))  # type: ignore[attr-defined]
        .order_by(WorkItem.image_id)
    ).all()
    now, outcome = utc_now(), []
    for image_id, name, attempts in rows:
        values: dict[str, object] = {"leased_until": None, "error": error[:MAX_ERROR_CHARS]}
        if attempts >= max_attempts:
            values.update(state=WorkState.FAILED.value, retry_at=None, failed_by=model_key[:200])
            outcome.append(Retry(name, attempts, True, 0.0))
        else:
            # The exponent is capped: the attempt limit is a setting.
            wait = retry_seconds * 2 ** min(max(attempts - 1, 0), 16)
            values["retry_at"] = now + timedelta(seconds=wait)
            outcome.append(Retry(name, attempts, False, wait))
        session.exec(update(WorkItem).where(WorkItem.kind == kind, WorkItem.image_id == image_id).values(**values))
    return outcome


def retry_failed(session: Session, kind: WorkKind | None = None) -> int:
    """Makes parked (FAILED) work of ``kind`` (None: every kind) pending
    again with a fresh set of attempts; returns how many items. The last
    error is kept: such work is left to the background worker, which claims
    it alone once it fails again (see :func:`images_to_do`)."""
    stmt = update(WorkItem).where(WorkItem.state == WorkState.FAILED)
    if kind is not None:
        stmt = stmt.where(WorkItem.kind == kind)
    values = {"state": WorkState.PENDING.value, "failed_by": "", "attempts": 0, "retry_at": None, "leased_until": None}
    return len(session.exec(stmt.values(**values).returning(WorkItem.image_id)).all())  # type: ignore[call-overload]


def complete(session: Session, kind: WorkKind, image_ids: Sequence[int]) -> None:
    """The work is done (its result is stored in the same transaction)."""
    if image_ids:
        session.exec(delete(WorkItem).where(WorkItem.kind == kind, WorkItem.image_id.in_(image_ids)))  # type: ignore[attr-defined]


def fail(session: Session, kind: WorkKind, image_id: int, model_key: str, error: str) -> None:
    """``model_key`` refused the image: the item stops blocking the queue and
    keeps the reason. It is retried only once another model runs (see
    :func:`enqueue_missing`). Creates the item when there was none (a
    refusal during /updatetags)."""
    values = {
        "image_id": image_id,
        "kind": kind.value,
        "state": WorkState.FAILED.value,
        "enqueued_at": utc_now(),
        "leased_until": None,
        "failed_by": model_key[:200],
        "error": error[:MAX_ERROR_CHARS],
        "retry_at": None,
    }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(WorkItem.__table__).values(**values)  # type: ignore[attr-defined]
    changes = {name: stmt.excluded[name] for name in ("state", "leased_until", "failed_by", "error", "retry_at")}
    session.exec(stmt.on_conflict_do_update(index_elements=["image_id", "kind"], set_=changes))


def enqueue_missing(session: Session, kind: WorkKind, model_key: str) -> int:
    """Queues every image without ``model_key``'s result (one INSERT ...
    SELECT), and makes work that another model refused pending again.
    Returns how many items became due."""
    now = utc_now()
    missing = select(
        Image.id,
        literal(kind.value),
        literal(WorkState.PENDING.value),
        literal(now, WorkItem.__table__.c.enqueued_at.type),  # type: ignore[attr-defined]
        literal(""),
        literal(""),
    ).where(~_done(kind, model_key))
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    insert = (
        dialect.insert(WorkItem.__table__)  # type: ignore[attr-defined]
        .from_select(["image_id", "kind", "state", "enqueued_at", "failed_by", "error"], missing)
        .on_conflict_do_nothing()
        # RETURNING counts the rows: psycopg reports no rowcount for INSERT ... SELECT.
        .returning(WorkItem.image_id)
    )
    added = len(session.exec(insert).all())  # type: ignore[call-overload]
    retried = session.exec(
        update(WorkItem)
        .where(WorkItem.kind == kind, WorkItem.state == WorkState.FAILED, WorkItem.failed_by != model_key)
        .values(state=WorkState.PENDING.value, failed_by="", error="", leased_until=None, attempts=0, retry_at=None)
        .returning(WorkItem.image_id)
    )
    return added + len(retried.all())


def images_to_do(
    session: Session, kind: WorkKind, model_key: str, after_id: int, limit: int, everything: bool = False
) -> list[StoredImage]:
    """The next ``limit`` images after ``after_id`` (by id) that lack
    ``model_key``'s result, or (``everything``) all images: a keyset page,
    so a caller walks the whole store without holding a transaction open.
    Images whose work of ``kind`` failed before are left out: they are the
    background worker's, which tries each alone with bounded attempts (one
    that kills the model service must not fail every caller's batch)."""
    failed_before = exists().where(WorkItem.image_id == Image.id, WorkItem.kind == kind, WorkItem.error != "")
    stmt = select(Image.id, Image.name).where(Image.id > after_id, ~failed_before)
    if not everything:
        stmt = stmt.where(~_done(kind, model_key))
    rows = session.exec(stmt.order_by(Image.id).limit(limit)).all()
    return [StoredImage(image_id, name) for image_id, name in rows]


@dataclass(frozen=True)
class FailedWork:
    image: str
    kind: str
    failed_by: str
    error: str
    attempts: int


def counts(session: Session) -> dict[tuple[str, str], int]:
    """Items per (kind, state), e.g. ``{("tag", "pending"): 3}``."""
    rows = session.exec(select(WorkItem.kind, WorkItem.state, func.count()).group_by(WorkItem.kind, WorkItem.state))
    return {(kind, state): count for kind, state, count in rows}


def failed(session: Session, limit: int) -> list[FailedWork]:
    """Up to ``limit`` parked items (refused or out of attempts), by kind
    and image name."""
    rows = session.exec(
        select(Image.name, WorkItem.kind, WorkItem.failed_by, WorkItem.error, WorkItem.attempts)
        .join(Image, Image.id == WorkItem.image_id)
        .where(WorkItem.state == WorkState.FAILED)
        .order_by(WorkItem.kind, Image.name)
        .limit(limit)
    )
    return [FailedWork(*row) for row in rows]
