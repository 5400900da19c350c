"""The tag list with how many images carry each tag (ListTags)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, union
from sqlmodel import Session, select

from ..models import HiddenTag, ImageTag, ManualTag, Rating, Tag, TaughtImageTag
from ..records import current_tagger_model


@dataclass(frozen=True)
class TagCounts:
    model: str  # "" before any tagger model
    tags: list[tuple[str, int]]  # by name, code-point order


def tag_counts(
    session: Session, prefix: str = "", user_id: int | None = None, limit: int = 0, contains: str = ""
) -> TagCounts:
    """Every tag on stored images with how many images carry it (with
    ``user_id``: of the user's rated images), from any source as filters
    see them: the current tagger model's at or above its threshold and not
    removed from the image (``hidden_tags``), manual tags, taught tags; an
    image with a tag from two sources counts once (``UNION`` of the
    (image, tag) pairs). Sorted by name in code-point order; names start
    with ``prefix`` (lowercase: tag names are stored lowercase).
    ``limit`` 0: every tag. ``contains`` (lowercase): names holding it
    anywhere (the tag box's substring suggestions; a scan of the tag names,
    a few thousand rows)."""
    model = current_tagger_model(session)
    wanted = None
    if prefix:
        # substr equality, not LIKE: no wildcard to escape, and the same
        # case rules on both databases.
        wanted = select(Tag.id).where(func.substr(Tag.name, 1, len(prefix)) == prefix)
    if contains:
        # LIKE with its wildcards escaped (autoescape): "_" in a tag name is a
        # literal underscore. Names are stored lowercase, so LIKE's case rules
        # (insensitive on SQLite, sensitive on PostgreSQL) agree.
        holding = Tag.name.contains(contains, autoescape=True)
        wanted = (wanted if wanted is not None else select(Tag.id)).where(holding)
    rated = select(Rating.image_id).where(Rating.user_id == user_id) if user_id is not None else None

    def narrowed(stmt, image_col, tag_col):  # type: ignore[no-untyped-def]
        if wanted is not None:
            stmt = stmt.where(tag_col.in_(wanted))
        if rated is not None:
            stmt = stmt.where(image_col.in_(rated))
        return stmt

    branches = []
    if model is not None:
        hidden = select(HiddenTag.image_id).where(
            HiddenTag.image_id == ImageTag.image_id, HiddenTag.tag_id == ImageTag.tag_id
        )
        branches.append(
            narrowed(
                select(ImageTag.image_id, ImageTag.tag_id).where(
                    ImageTag.tagger_model_id == model.id, ImageTag.score >= model.threshold, ~hidden.exists()
                ),
                ImageTag.image_id,
                ImageTag.tag_id,
            )
        )
    branches.append(narrowed(select(ManualTag.image_id, ManualTag.tag_id), ManualTag.image_id, ManualTag.tag_id))
    branches.append(
        narrowed(select(TaughtImageTag.image_id, TaughtImageTag.tag_id), TaughtImageTag.image_id, TaughtImageTag.tag_id)
    )
    pairs = union(*branches).subquery()
    counted = select(pairs.c.tag_id, func.count().label("n")).group_by(pairs.c.tag_id).subquery()
    # Code-point order: PostgreSQL's "C" collation; SQLite's BINARY compares
    # UTF-8 bytes, which is code-point order.
    collation = "C" if session.get_bind().dialect.name == "postgresql" else "BINARY"
    stmt = select(Tag.name, counted.c.n).join(counted, counted.c.tag_id == Tag.id).order_by(Tag.name.collate(collation))
    if limit:
        stmt = stmt.limit(limit)
    return TagCounts(model.model_id if model is not None else "", [(name, count) for name, count in session.exec(stmt)])
