"""The tag list with how many images carry each tag (ListTags)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, union_all
from sqlalchemy.orm import aliased
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
    image with a tag from two sources counts once (a manual or taught pair
    the model shows too is counted with the model's). Sorted by name in code-point order; names start
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

    def visible(image_col, tag_col):  # type: ignore[no-untyped-def]
        """Whether the model's tag is shown on the image (scored at or
        above the threshold, not removed)."""
        x, h = aliased(ImageTag), aliased(HiddenTag)
        assert model is not None
        return (
            select(x.image_id)
            .where(
                x.image_id == image_col,
                x.tag_id == tag_col,
                x.tagger_model_id == model.id,
                x.score >= model.threshold,
                ~select(h.image_id).where(h.image_id == x.image_id, h.tag_id == x.tag_id).exists(),
            )
            .exists()
        )

    # Per source a GROUP BY over its (tag, image) index; a manual or taught
    # pair the model shows too is left to the model's count (manual and
    # taught never share a pair), so the sums count each image once.
    branches = []
    if model is not None:
        branches.append(
            narrowed(
                select(ImageTag.tag_id.label("tag_id"), func.count().label("n")).where(  # type: ignore[attr-defined]
                    ImageTag.tagger_model_id == model.id,
                    ImageTag.score >= model.threshold,
                    ~select(HiddenTag.image_id)
                    .where(HiddenTag.image_id == ImageTag.image_id, HiddenTag.tag_id == ImageTag.tag_id)
                    .exists(),
                ),
                ImageTag.image_id,
                ImageTag.tag_id,
            ).group_by(ImageTag.tag_id)
        )
    for table in (ManualTag, TaughtImageTag):
        counted_source = select(table.tag_id.label("tag_id"), func.count().label("n"))  # type: ignore[attr-defined]
        if model is not None:
            counted_source = counted_source.where(~visible(table.image_id, table.tag_id))
        branches.append(narrowed(counted_source, table.image_id, table.tag_id).group_by(table.tag_id))
    pairs = union_all(*branches).subquery()
    counted = select(pairs.c.tag_id, func.sum(pairs.c.n).label("n")).group_by(pairs.c.tag_id).subquery()
    # Code-point order: PostgreSQL's "C" collation; SQLite's BINARY compares
    # UTF-8 bytes, which is code-point order.
    collation = "C" if session.get_bind().dialect.name == "postgresql" else "BINARY"
    stmt = select(Tag.name, counted.c.n).join(counted, counted.c.tag_id == Tag.id).order_by(Tag.name.collate(collation))
    if limit:
        stmt = stmt.limit(limit)
    return TagCounts(
        model.model_id if model is not None else "", [(name, int(count)) for name, count in session.exec(stmt)]
    )
