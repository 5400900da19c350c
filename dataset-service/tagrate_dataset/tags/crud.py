"""Database operations on tags: the current tagger model's tags of an image,
validating and storing a model's scores for an image, registering tagger
models. Plain functions that take a Session; transactions are the caller's."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import and_, delete, or_, update
from sqlmodel import Session, select

from tagrate_common.errors import InvalidArgument

from ..db import insert_missing, upsert
from ..models import ImageTag, ImageTagging, Tag, TaggerModel, utc_now
from ..records import current_tagger_model, require_image
from . import members


def normalise_tag(name: str) -> str:
    return name.strip().lower()


@dataclass(frozen=True)
class ImageTags:
    image: str
    tagged: bool
    model_id: str
    tags: list[tuple[str, float]]  # highest score first
    source: str = ""
    original_name: str = ""  # the first file name it was stored under; "": none


def image_tags(session: Session, name: str) -> ImageTags:
    """The current tagger model's tags of an image at or above its threshold,
    highest score first (ties by name). NotFound for an unknown image."""
    image = require_image(session, name)
    model = current_tagger_model(session)
    if model is None:
        return ImageTags(name, False, "", [], image.source, image.original_filename)
    if session.get(ImageTagging, (image.id, model.id)) is None:
        return ImageTags(name, False, model.model_id, [], image.source, image.original_filename)
    rows = session.exec(
        select(Tag.name, ImageTag.score)
        .join(Tag, Tag.id == ImageTag.tag_id)
        .where(ImageTag.image_id == image.id, ImageTag.tagger_model_id == model.id, ImageTag.score >= model.threshold)
        .order_by(ImageTag.score.desc(), Tag.name)
    ).all()
    return ImageTags(
        name, True, model.model_id, [(tag, score) for tag, score in rows], image.source, image.original_filename
    )


def score(value: float, param: str) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(f"'{param}' must be a finite number, got {value!r}", "invalid_parameter")
    return float(value)


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


def set_tag_categories(session: Session, categories: Mapping[str, str]) -> None:
    """Records each tag's category as the tagger's model gives it (names as
    the model spells them; normalised here), one UPDATE per category."""
    by_category: dict[str, set[str]] = {}
    for name, category in categories.items():
        by_category.setdefault(category[:32], set()).add(normalise_tag(name))
    for category, names in sorted(by_category.items()):
        wanted = sorted(names)
        for start in range(0, len(wanted), 500):
            session.exec(
                update(Tag)
                .where(Tag.name.in_(wanted[start : start + 500]))
                .where(or_(Tag.category.is_(None), Tag.category != category))
                .values(category=category)
            )


def register_tagger_model(session: Session, model_id: str, threshold: float) -> TaggerModel:
    """The model's row, created (becoming the current model) if new; a known
    model's threshold is updated to the one given."""
    insert_missing(session, TaggerModel, [{"model_id": model_id, "threshold": threshold, "registered_at": utc_now()}])
    model = session.exec(select(TaggerModel).where(TaggerModel.model_id == model_id)).one()
    if model.threshold != threshold:
        model.threshold = threshold
        session.flush()
    members.sync(session.connection())  # a new current model or threshold: tag_members rebuilt
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
        members.sync(session.connection())
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
