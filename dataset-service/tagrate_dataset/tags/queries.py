"""The tag list with how many images carry each tag (ListTags)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

from ..models import ImageTag, Rating, Tag
from ..records import current_tagger_model


@dataclass(frozen=True)
class TagCounts:
    model: str  # "" before any tagger model
    tags: list[tuple[str, int]]  # by name, code-point order


def tag_counts(
    session: Session, prefix: str = "", user_id: int | None = None, limit: int = 0, contains: str = ""
) -> TagCounts:
    """The current tagger model's tags on stored images at or above its
    threshold, with how many images carry each (with ``user_id``: of the
    user's rated images), sorted by name in code-point order; names start
    with ``prefix`` (lowercase: tag names are stored lowercase). One GROUP
    BY over ``ix_image_tags_model_tag_score_image``; ``limit`` 0: every tag.
    ``contains`` (lowercase): names holding it anywhere (the tag box's
    substring suggestions; a scan of the tag names, a few thousand rows)."""
    model = current_tagger_model(session)
    if model is None:
        return TagCounts("", [])
    image_tags = select(ImageTag.tag_id, func.count().label("n")).where(
        ImageTag.tagger_model_id == model.id, ImageTag.score >= model.threshold
    )
    if prefix:
        # substr equality, not LIKE: no wildcard to escape, and the same
        # case rules on both databases.
        matching = select(Tag.id).where(func.substr(Tag.name, 1, len(prefix)) == prefix)
        image_tags = image_tags.where(ImageTag.tag_id.in_(matching))
    if contains:
        # LIKE with its wildcards escaped (autoescape): "_" in a tag name is a
        # literal underscore. Names are stored lowercase, so LIKE's case rules
        # (insensitive on SQLite, sensitive on PostgreSQL) agree.
        holding = select(Tag.id).where(Tag.name.contains(contains, autoescape=True))
        image_tags = image_tags.where(ImageTag.tag_id.in_(holding))
    if user_id is not None:
        image_tags = image_tags.where(ImageTag.image_id.in_(select(Rating.image_id).where(Rating.user_id == user_id)))
    counted = image_tags.group_by(ImageTag.tag_id).subquery()
    # Code-point order: PostgreSQL's "C" collation; SQLite's BINARY compares
    # UTF-8 bytes, which is code-point order.
    collation = "C" if session.get_bind().dialect.name == "postgresql" else "BINARY"
    stmt = select(Tag.name, counted.c.n).join(counted, counted.c.tag_id == Tag.id).order_by(Tag.name.collate(collation))
    if limit:
        stmt = stmt.limit(limit)
    return TagCounts(model.model_id, [(name, count) for name, count in session.exec(stmt)])
