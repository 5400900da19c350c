"""Tags people own, in the database: manual tags (added, removed), removals
of model and taught tags that stick (``hidden_tags``), aliases and
implications (with their transitive closure ``tag_implied``, rewritten in
the same transaction as every change), and an image's tags with their
sources. Plain functions that take a Session; transactions are the caller's.

Every rule is applied in SQL: an alias is resolved by a lookup, the tags
implied by the ones added are read from the closure and inserted with one
statement, and the closure itself is one recursive statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, bindparam, delete, func, text
from sqlmodel import Session, select

from tagrate_common.errors import AlreadyExists, Conflict, NotFound
from tagrate_common.tagfilter import tag_name

from ..db import insert_missing
from ..models import (
    HiddenTag,
    ImageTag,
    ManualTag,
    Tag,
    TagAlias,
    TagImplication,
    TagImplied,
    TaughtImageTag,
    TaughtTag,
    UTCDateTime,
    utc_now,
)
from ..records import current_tagger_model, require_image
from . import members
from .crud import tag_ids

# Most tags one /addtags or /removetags may name.
MAX_TAGS_PER_CHANGE = 100


@dataclass(frozen=True)
class DetailTag:
    tag: str
    source: str  # "manual" | "model" | "taught"
    score: float | None
    category: str | None = None  # as the tagger's model gives it; None: unknown


@dataclass(frozen=True)
class ImageTagDetail:
    image: str
    original_name: str
    tags: list[DetailTag]


def names(raw: Sequence[str], param: str = "tag") -> list[str]:
    """Validated tag names (400 ``invalid_tag`` naming a bad one), once each."""
    return list(dict.fromkeys(tag_name(value, param) for value in raw))


def _resolved(session: Session, wanted: Sequence[str]) -> list[str]:
    """The names with each alias replaced by its tag's name."""
    if not wanted:
        return []
    rows = session.exec(
        select(TagAlias.alias, Tag.name).join(Tag, Tag.id == TagAlias.tag_id).where(TagAlias.alias.in_(wanted))
    ).all()
    targets = dict(rows)
    return list(dict.fromkeys(targets.get(name, name) for name in wanted))


def add_tags(session: Session, image_name: str, wanted: Sequence[str], user: str | None) -> ImageTagDetail:
    """Adds manual tags (names already validated) to a stored image:
    aliases resolved first, every tag they imply added with them; a tag
    hidden on the image is shown again, and a taught tag there becomes
    manual. NotFound for an unknown image."""
    image = require_image(session, image_name)
    ids = list(tag_ids(session, _resolved(session, wanted)).values())
    if ids:
        implied = session.exec(select(TagImplied.implied_id).where(TagImplied.tag_id.in_(ids))).all()
        ids = sorted(set(ids) | set(implied))
        now = utc_now()
        insert_missing(
            session,
            ManualTag,
            [{"image_id": image.id, "tag_id": tag_id, "added_by": user, "added_at": now} for tag_id in ids],
        )
        session.exec(delete(HiddenTag).where(and_(HiddenTag.image_id == image.id, HiddenTag.tag_id.in_(ids))))
        session.exec(
            delete(TaughtImageTag).where(and_(TaughtImageTag.image_id == image.id, TaughtImageTag.tag_id.in_(ids)))
        )
    return image_tag_detail(session, image_name)


def remove_tags(session: Session, image_name: str, wanted: Sequence[str], user: str | None) -> ImageTagDetail:
    """Removes tags from a stored image whatever their source: a manual tag
    is deleted, and the removal is kept (``hidden_tags``), so the model's or
    a taught classifier's tag stays off the image through re-tagging and
    the image counts as a negative example when the tag is taught. Tags
    the image does not have are no error. NotFound for an unknown image."""
    image = require_image(session, image_name)
    resolved = _resolved(session, wanted)
    if resolved:
        ids = session.exec(select(Tag.id).where(Tag.name.in_(resolved))).all()
        if ids:
            session.exec(delete(ManualTag).where(and_(ManualTag.image_id == image.id, ManualTag.tag_id.in_(ids))))
            session.exec(
                delete(TaughtImageTag).where(and_(TaughtImageTag.image_id == image.id, TaughtImageTag.tag_id.in_(ids)))
            )
            now = utc_now()
            insert_missing(
                session,
                HiddenTag,
                [{"image_id": image.id, "tag_id": tag_id, "removed_by": user, "removed_at": now} for tag_id in ids],
            )
    return image_tag_detail(session, image_name)


def image_tag_detail(session: Session, image_name: str) -> ImageTagDetail:
    """Every tag of a stored image with its source: manual ones by name,
    then the current tagger model's (at or above its threshold) and the
    taught ones by score, highest first; hidden tags and model or taught
    tags that are also manual are left out."""
    image = require_image(session, image_name)
    manual = dict(
        session.exec(
            select(Tag.name, Tag.category)
            .join(ManualTag, ManualTag.tag_id == Tag.id)
            .where(ManualTag.image_id == image.id)
        ).all()
    )
    taken = set(manual)
    scored: list[DetailTag] = []
    model = current_tagger_model(session)
    hidden = select(HiddenTag.tag_id).where(HiddenTag.image_id == image.id)
    if model is not None:
        rows = session.exec(
            select(Tag.name, ImageTag.score, Tag.category)
            .join(Tag, Tag.id == ImageTag.tag_id)
            .where(
                ImageTag.image_id == image.id,
                ImageTag.tagger_model_id == model.id,
                ImageTag.score >= model.threshold,
                ImageTag.tag_id.not_in(hidden),
            )
        ).all()
        scored += [DetailTag(name, "model", score, category) for name, score, category in rows if name not in taken]
    rows = session.exec(
        select(Tag.name, TaughtImageTag.score, Tag.category)
        .join(Tag, Tag.id == TaughtImageTag.tag_id)
        .where(TaughtImageTag.image_id == image.id)
    ).all()
    scored += [DetailTag(name, "taught", score, category) for name, score, category in rows if name not in taken]
    scored.sort(key=lambda tag: (-(tag.score or 0.0), tag.tag, tag.source))
    tags = [DetailTag(name, "manual", None, manual[name]) for name in sorted(manual)] + scored
    return ImageTagDetail(image.name, image.original_filename, tags)


# ---- aliases ----


def _tag_id(session: Session, name: str) -> int | None:
    return session.exec(select(Tag.id).where(Tag.name == name)).first()


def _used(session: Session, tag_id: int) -> bool:
    """Whether a tag is on any image or in an implication."""
    probes = [
        select(ManualTag.tag_id).where(ManualTag.tag_id == tag_id),
        select(ImageTag.tag_id).where(ImageTag.tag_id == tag_id),
        select(TaughtImageTag.tag_id).where(TaughtImageTag.tag_id == tag_id),
        select(TagImplication.tag_id).where(TagImplication.tag_id == tag_id),
        select(TagImplication.tag_id).where(TagImplication.implies_id == tag_id),
    ]
    return any(session.exec(probe.limit(1)).first() is not None for probe in probes)


def add_alias(session: Session, alias: str, tag: str) -> tuple[str, str, bool]:
    """Makes ``alias`` stand for ``tag`` (names validated): (alias, tag,
    created). Conflict (409) for an alias of itself, a chain (the tag is an
    alias, or the alias is another alias's tag), an alias that is a used
    tag, or an alias that already stands for another tag."""
    if alias == tag:
        raise Conflict(f"'{alias}' cannot be an alias of itself", "alias_conflict")
    existing = session.get(TagAlias, alias)
    if existing is not None:
        current = session.get(Tag, existing.tag_id)
        if current is not None and current.name == tag:
            return alias, tag, False
        raise AlreadyExists(
            f"'{alias}' is already an alias of '{current.name if current else '?'}'; delete it first",
            "alias_exists",
        )
    if session.get(TagAlias, tag) is not None:
        raise Conflict(f"'{tag}' is itself an alias; alias '{alias}' to the tag it stands for", "alias_chain")
    alias_id = _tag_id(session, alias)
    if alias_id is not None:
        if session.exec(select(TagAlias.alias).where(TagAlias.tag_id == alias_id).limit(1)).first() is not None:
            raise Conflict(f"other aliases stand for '{alias}', so it cannot become an alias", "alias_chain")
        if _used(session, alias_id):
            raise Conflict(
                f"'{alias}' is a tag in use (on images or in an implication); an alias must not be", "alias_in_use"
            )
    target = tag_ids(session, [tag])[tag]
    session.add(TagAlias(alias=alias, tag_id=target, created_at=utc_now()))
    session.flush()
    return alias, tag, True


def list_aliases(session: Session) -> list[tuple[str, str]]:
    rows = session.exec(select(TagAlias.alias, Tag.name).join(Tag, Tag.id == TagAlias.tag_id)).all()
    return sorted((alias, name) for alias, name in rows)


def delete_alias(session: Session, alias: str) -> tuple[str, str]:
    found = session.get(TagAlias, alias)
    if found is None:
        raise NotFound(f"there is no alias '{alias}'", "alias_not_found")
    target = session.get(Tag, found.tag_id)
    session.delete(found)
    session.flush()
    return alias, target.name if target else ""


# ---- implications ----

_CLOSURE = (
    "WITH RECURSIVE closure(tag_id, implied_id) AS ("
    "SELECT tag_id, implies_id FROM tag_implications "
    "UNION SELECT c.tag_id, i.implies_id FROM closure c JOIN tag_implications i ON i.tag_id = c.implied_id) "
    "INSERT INTO tag_implied (tag_id, implied_id) SELECT DISTINCT tag_id, implied_id FROM closure"
)


def _rebuild_closure(session: Session) -> None:
    """Rewrites the closure; the tags whose implying tags changed are
    recomputed in ``tag_members`` over every image."""
    pairs = select(TagImplied.tag_id, TagImplied.implied_id)
    before = set(session.exec(pairs).all())
    session.exec(delete(TagImplied))
    session.exec(text(_CLOSURE))  # type: ignore[call-overload]
    after = set(session.exec(pairs).all())
    members.refresh_tags(session.connection(), {implied for _, implied in before ^ after})


def add_implication(session: Session, tag: str, implies: str) -> tuple[str, str, bool]:
    """Declares that ``tag`` implies ``implies`` (aliases resolved), adds
    the implied tags to every image that has ``tag`` (or a tag implying it)
    by hand, and rewrites the closure: (tag, implies, created). Conflict
    (409) for a cycle."""
    tag, implies = _resolved(session, [tag])[0], _resolved(session, [implies])[0]
    if tag == implies:
        raise Conflict(f"'{tag}' cannot imply itself", "implication_cycle")
    ids = tag_ids(session, [tag, implies])
    source, target = ids[tag], ids[implies]
    if session.get(TagImplication, (source, target)) is not None:
        return tag, implies, False
    if session.get(TagImplied, (target, source)) is not None:
        raise Conflict(f"'{implies}' already implies '{tag}': this implication would make a cycle", "implication_cycle")
    session.add(TagImplication(tag_id=source, implies_id=target, created_at=utc_now()))
    session.flush()
    _rebuild_closure(session)
    # Images with the tag (or one implying it) by hand get what it implies now.
    session.exec(  # type: ignore[call-overload]
        text(
            "INSERT INTO manual_tags (image_id, tag_id, added_by, added_at) "
            "SELECT DISTINCT m.image_id, c.implied_id, m.added_by, :now FROM manual_tags m "
            "JOIN tag_implied c ON c.tag_id = m.tag_id "
            "WHERE c.tag_id IN (SELECT CAST(:source AS INTEGER) UNION "
            "SELECT d.tag_id FROM tag_implied d WHERE d.implied_id = :source) "
            "AND NOT EXISTS (SELECT 1 FROM manual_tags e WHERE e.image_id = m.image_id AND e.tag_id = c.implied_id)"
        ).bindparams(bindparam("now", utc_now(), type_=UTCDateTime), source=source)
    )
    return tag, implies, True


def list_implications(session: Session) -> list[tuple[str, str]]:
    implied = Tag.__table__.alias("implied")  # type: ignore[attr-defined]
    rows = session.exec(
        select(Tag.name, implied.c.name)
        .select_from(TagImplication)
        .join(Tag, Tag.id == TagImplication.tag_id)
        .join(implied, implied.c.id == TagImplication.implies_id)
    ).all()
    return sorted((a, b) for a, b in rows)


def delete_implication(session: Session, tag: str, implies: str) -> tuple[str, str]:
    tag, implies = _resolved(session, [tag])[0], _resolved(session, [implies])[0]
    source, target = _tag_id(session, tag), _tag_id(session, implies)
    found = session.get(TagImplication, (source, target)) if source is not None and target is not None else None
    if found is None:
        raise NotFound(f"there is no implication '{tag}' -> '{implies}'", "implication_not_found")
    session.delete(found)
    session.flush()
    _rebuild_closure(session)
    return tag, implies


# ---- taught tags (the list; learning is the trainer's) ----


@dataclass(frozen=True)
class TaughtInfo:
    tag: str
    examples: int
    negatives: int
    images_tagged: int
    precision_cv: float
    threshold: float
    trained_at: datetime


def taught_tags(session: Session) -> list[TaughtInfo]:
    rows = session.exec(select(Tag.name, TaughtTag).join(TaughtTag, TaughtTag.tag_id == Tag.id)).all()
    return sorted(
        (
            TaughtInfo(
                name,
                row.examples,
                row.negatives,
                row.images_tagged,
                row.precision_cv,
                row.threshold,
                row.trained_at,
            )
            for name, row in rows
        ),
        key=lambda info: info.tag,
    )


def manual_count(session: Session, tag_id: int) -> int:
    return session.exec(select(func.count()).select_from(ManualTag).where(ManualTag.tag_id == tag_id)).one()
