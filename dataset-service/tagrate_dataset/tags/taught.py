"""Taught tags in the database: which manual tags are due to be (re)learned,
their examples as feature vectors, and storing a learned classifier with
the tags it puts on images. The learning itself is the trainer's
(``tagrate_trainer.taught``); this module only reads and writes.

A tag's examples are identified by a digest of aggregates over them (how
many positive and negative images with a vector of the extractor, and the
sums of their ids): adding or removing an example changes it, so a tag whose
stored digest differs is due, once its last change is older than the
settle time (a person tagging a batch triggers one relearning, not one per
image).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import delete, text
from sqlmodel import Session, select

from tagrate_common.errors import Conflict, InvalidArgument, NotFound

from ..models import ImageFeatures, Tag, TaughtImageTag, TaughtTag, utc_now, walked_by_image

# Images scored per chunk when a classifier is applied (bounded memory).
CHUNK = 2000


def _stamp(value: object) -> datetime | None:
    """A timestamp read by plain SQL: SQLite hands back its naive UTC text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_STATE = """
SELECT
  (SELECT count(*) FROM manual_tags m JOIN image_features f ON f.image_id = m.image_id AND f.extractor_id = :e
   WHERE m.tag_id = :t),
  (SELECT coalesce(sum(m.image_id), 0) FROM manual_tags m JOIN image_features f ON f.image_id = m.image_id
   AND f.extractor_id = :e WHERE m.tag_id = :t),
  (SELECT count(*) FROM hidden_tags h JOIN image_features f ON f.image_id = h.image_id AND f.extractor_id = :e
   WHERE h.tag_id = :t),
  (SELECT coalesce(sum(h.image_id), 0) FROM hidden_tags h JOIN image_features f ON f.image_id = h.image_id
   AND f.extractor_id = :e WHERE h.tag_id = :t),
  (SELECT max(m.added_at) FROM manual_tags m WHERE m.tag_id = :t),
  (SELECT max(h.removed_at) FROM hidden_tags h WHERE h.tag_id = :t)
"""


@dataclass(frozen=True)
class _State:
    positives: int
    negatives: int
    digest: str
    changed_at: datetime | None


def _state(session: Session, tag_id: int, extractor: str) -> _State:
    row = session.execute(text(_STATE), {"t": tag_id, "e": extractor}).one()
    changes = [stamp for stamp in (_stamp(row[4]), _stamp(row[5])) if stamp is not None]
    digest = f"{row[0]}:{row[1]}:{row[2]}:{row[3]}:{extractor}"[:64]
    return _State(row[0], row[2], digest, max(changes) if changes else None)


def due_tags(session: Session, extractor: str, min_examples: int, settle: float) -> tuple[list[str], list[str]]:
    """(tags due to be learned, taught tags forgotten now). Forgetting (too
    few examples left) deletes the tag's classifier and its tags here."""
    candidates = session.execute(
        text(
            "SELECT m.tag_id FROM manual_tags m JOIN image_features f ON f.image_id = m.image_id "
            "AND f.extractor_id = :e GROUP BY m.tag_id HAVING count(*) >= :n"
        ),
        {"e": extractor, "n": min_examples},
    ).scalars()
    wanted = set(candidates)
    taught = {row.tag_id: row for row in session.exec(select(TaughtTag))}
    due, forgotten = [], []
    now = utc_now()
    for tag_id in sorted(wanted | set(taught)):
        state = _state(session, tag_id, extractor)
        name = session.get(Tag, tag_id)
        if name is None:
            continue
        if state.positives < min_examples:
            if tag_id in taught:
                session.exec(delete(TaughtImageTag).where(TaughtImageTag.tag_id == tag_id))  # type: ignore[arg-type]
                session.exec(delete(TaughtTag).where(TaughtTag.tag_id == tag_id))  # type: ignore[arg-type]
                forgotten.append(name.name)
            continue
        current = taught.get(tag_id)
        if current is not None and current.examples_digest == state.digest:
            continue
        if state.changed_at is not None and state.changed_at > now - timedelta(seconds=settle):
            continue
        due.append(name.name)
    return due, forgotten


@dataclass(frozen=True)
class Examples:
    digest: str
    dim: int
    positives: bytes
    negatives: bytes
    others: bytes
    population: int


def _vectors(session: Session, sql: str, params: dict[str, object]) -> tuple[bytes, int]:
    rows = session.execute(text(sql), params).all()
    return b"".join(row[0] for row in rows), (rows[0][1] if rows else 0)


def examples(session: Session, tag: str, extractor: str, others: int, seed: int) -> Examples:
    """The tag's examples as vectors (see the module docstring)."""
    tag_id = session.exec(select(Tag.id).where(Tag.name == tag)).first()
    if tag_id is None:
        raise NotFound(f"there is no tag '{tag}'", "tag_not_found")
    state = _state(session, tag_id, extractor)
    params: dict[str, object] = {"t": tag_id, "e": extractor, "n": others}
    positives, dim = _vectors(
        session,
        "SELECT f.vector, f.dim FROM manual_tags m JOIN image_features f ON f.image_id = m.image_id "
        "AND f.extractor_id = :e WHERE m.tag_id = :t ORDER BY m.image_id",
        params,
    )
    negatives, _ = _vectors(
        session,
        "SELECT f.vector, f.dim FROM hidden_tags h JOIN image_features f ON f.image_id = h.image_id "
        "AND f.extractor_id = :e WHERE h.tag_id = :t ORDER BY h.image_id",
        params,
    )
    unlabelled = (
        "FROM image_features f WHERE f.extractor_id = :e "
        "AND NOT EXISTS (SELECT 1 FROM manual_tags m WHERE m.image_id = f.image_id AND m.tag_id = :t) "
        "AND NOT EXISTS (SELECT 1 FROM hidden_tags h WHERE h.image_id = f.image_id AND h.tag_id = :t)"
    )
    population = session.execute(text(f"SELECT count(*) {unlabelled}"), params).scalar_one()
    # A deterministic sample for a seed: ids hashed with it, not random().
    sample, _ = _vectors(
        session,
        f"SELECT f.vector, f.dim {unlabelled} ORDER BY (f.image_id * 2654435761 + :seed) % 1000003, f.image_id "
        "LIMIT :n",
        {**params, "seed": seed % 1000003},
    )
    return Examples(state.digest, dim, positives, negatives, sample, population)


def _normalised(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class Classifier:
    weights: np.ndarray
    bias: float
    threshold: float
    precision_cv: float
    examples: int
    negatives: int


def publish(session: Session, tag: str, digest: str, extractor: str, model: Classifier) -> int:
    """Stores the classifier and tags every image with a vector it scores
    at or above the threshold, except images with the tag by hand or
    removed; returns how many. Conflict when the examples changed since
    ``digest`` (the trainer learns again)."""
    tag_id = session.exec(select(Tag.id).where(Tag.name == tag)).first()
    if tag_id is None:
        raise NotFound(f"there is no tag '{tag}'", "tag_not_found")
    state = _state(session, tag_id, extractor)
    if state.digest != digest:
        raise Conflict(f"the examples of '{tag}' changed while it was learned; it is learned again", "stale_examples")
    weights = model.weights.astype(np.float64)
    session.exec(delete(TaughtImageTag).where(TaughtImageTag.tag_id == tag_id))  # type: ignore[arg-type]
    excluded = set(
        session.execute(
            text(
                "SELECT image_id FROM manual_tags WHERE tag_id = :t UNION SELECT image_id FROM hidden_tags "
                "WHERE tag_id = :t"
            ),
            {"t": tag_id},
        ).scalars()
    )
    tagged = 0
    after = 0
    while True:
        rows = session.exec(
            select(ImageFeatures.image_id, ImageFeatures.dim, ImageFeatures.vector)
            .where(walked_by_image(extractor), ImageFeatures.image_id > after)
            .order_by(ImageFeatures.image_id)  # type: ignore[arg-type]
            .limit(CHUNK)
        ).all()
        if not rows:
            break
        after = rows[-1][0]
        if any(dim != len(weights) for _, dim, _ in rows):
            raise InvalidArgument(
                f"the classifier has {len(weights)} weights but the vectors of {extractor} have another length",
                "invalid_weights",
            )
        vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f4").reshape(len(rows), -1)
        scores = _normalised(vectors.astype(np.float64)) @ weights + model.bias
        keep = [
            {"image_id": image_id, "tag_id": tag_id, "score": float(score)}
            for (image_id, _, _), score in zip(rows, scores, strict=True)
            if score >= model.threshold and image_id not in excluded
        ]
        if keep:
            session.exec(TaughtImageTag.__table__.insert(), params=keep)  # type: ignore[attr-defined,call-overload]
        tagged += len(keep)
    row = session.get(TaughtTag, tag_id)
    values = {
        "examples": model.examples,
        "negatives": model.negatives,
        "images_tagged": tagged,
        "precision_cv": model.precision_cv,
        "threshold": model.threshold,
        "examples_digest": digest,
        "trained_at": utc_now(),
    }
    if row is None:
        session.add(TaughtTag(tag_id=tag_id, **values))
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.flush()
    return tagged
