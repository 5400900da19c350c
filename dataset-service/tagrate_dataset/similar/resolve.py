"""Resolving a duplicate group (an admin's choice): one image is kept, the
others' ratings, manual tags, album places and original name move onto it and they are
deleted, in one transaction (all or nothing: a crash half-way leaves the
group as it was; the removed images' files go after the commit, and a crash
in between leaves only files without rows, which the next start collects).
Marking images as not duplicates records every pair among them.

Ratings: each user's rating of the kept image wins; a user who rated only
removed images gets the latest of those ratings (value and time) on the
kept image. Users whose ratings changed get a new snapshot (their models
are no longer up to date).

Manual tags: the kept image gets every manual tag of a removed one that it
lacks (with who added it and when); as when a person adds a tag, a tag
hidden on the kept image shows again and a taught tag there becomes
manual."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

from sqlalchemy import and_, delete, or_
from sqlmodel import Session, select

from tagrate_common.errors import InvalidArgument

from .. import records
from ..albums import membership as albums
from ..db import insert_missing
from ..images import crud as images_crud
from ..models import DuplicatePair, HiddenTag, ManualTag, NotDuplicate, Rating, TaughtImageTag, User, utc_now
from ..snapshots import bump_versions

# Most images one request names.
MAX_IMAGES = 100


@dataclass(frozen=True)
class Resolved:
    kept: str
    removed: list[tuple[str, str]]  # (name, format): the caller removes the files after the commit
    ratings_moved: int
    tags_moved: int


def check_names(names: list[str], what: str) -> list[str]:
    if len(names) > MAX_IMAGES:
        raise InvalidArgument(f"'{what}' names at most {MAX_IMAGES} images, got {len(names)}", f"invalid_{what}")
    if len(set(names)) != len(names):
        raise InvalidArgument(f"'{what}' names an image twice", f"invalid_{what}")
    return names


def resolve(session: Session, keep: str, remove: list[str]) -> Resolved:
    """Keeps ``keep`` and deletes ``remove`` after moving their ratings,
    manual tags, album places and original name onto it (see the module's
    doc)."""
    if keep in remove:
        raise InvalidArgument("'keep' is also named in 'remove'", "invalid_remove")
    kept = records.require_image(session, keep)
    removed = [records.require_image(session, name) for name in remove]
    assert kept.id is not None
    removed_ids = [image.id for image in removed]
    rated = {row.user_id for row in session.exec(select(Rating).where(Rating.image_id == kept.id)).all()}
    latest: dict[int, Rating] = {}
    for rating in session.exec(select(Rating).where(Rating.image_id.in_(removed_ids))).all():  # type: ignore[attr-defined]
        if rating.user_id in rated:
            continue
        best = latest.get(rating.user_id)
        if best is None or rating.rated_at > best.rated_at:
            latest[rating.user_id] = rating
    moved = [
        {"user_id": r.user_id, "image_id": kept.id, "rating": r.rating, "rated_at": r.rated_at} for r in latest.values()
    ]
    insert_missing(session, Rating, moved)
    if moved:
        bump_versions(session, User.id.in_([r["user_id"] for r in moved]))  # type: ignore[union-attr]
    tags_moved = _move_manual_tags(session, kept.id, removed_ids)  # type: ignore[arg-type]
    if not kept.original_filename:
        kept.original_filename = next((image.original_filename for image in removed if image.original_filename), "")
        session.add(kept)
        session.flush()
    for image in removed:
        assert image.id is not None
        albums.move_image(session, image.id, kept.id)
    out = []
    for image in removed:
        deleted = images_crud.delete_image(session, image.name)
        out.append((deleted.image, deleted.format))
    return Resolved(kept.name, out, len(moved), tags_moved)


def _move_manual_tags(session: Session, kept_id: int, removed_ids: list[int]) -> int:
    """The removed images' manual tags the kept image lacks, onto it (the
    earliest addition of each tag); returns how many."""
    own = set(session.exec(select(ManualTag.tag_id).where(ManualTag.image_id == kept_id)).all())
    first: dict[int, ManualTag] = {}
    for tag in session.exec(select(ManualTag).where(ManualTag.image_id.in_(removed_ids))).all():  # type: ignore[attr-defined]
        if tag.tag_id not in own and (tag.tag_id not in first or tag.added_at < first[tag.tag_id].added_at):
            first[tag.tag_id] = tag
    if not first:
        return 0
    insert_missing(
        session,
        ManualTag,
        [
            {"image_id": kept_id, "tag_id": t.tag_id, "added_by": t.added_by, "added_at": t.added_at}
            for t in first.values()
        ],
    )
    ids = sorted(first)
    session.exec(delete(HiddenTag).where(and_(HiddenTag.image_id == kept_id, HiddenTag.tag_id.in_(ids))))  # type: ignore[attr-defined]
    session.exec(
        delete(TaughtImageTag).where(and_(TaughtImageTag.image_id == kept_id, TaughtImageTag.tag_id.in_(ids)))  # type: ignore[attr-defined]
    )
    return len(first)


def mark_not_duplicates(session: Session, names: list[str]) -> int:
    """Records every pair among ``names`` as different pictures and drops
    the pairs found between them; returns how many pairs."""
    if len(names) < 2:
        raise InvalidArgument("'not_duplicates' must name at least two images", "invalid_not_duplicates")
    ids = sorted({records.require_image(session, name).id for name in names})  # type: ignore[type-var]
    pairs = list(combinations(ids, 2))
    now = utc_now()
    for start in range(0, len(pairs), 500):
        chunk = pairs[start : start + 500]
        insert_missing(session, NotDuplicate, [{"image_a": a, "image_b": b, "marked_at": now} for a, b in chunk])
        session.exec(
            delete(DuplicatePair).where(
                or_(*(and_(DuplicatePair.image_a == a, DuplicatePair.image_b == b) for a, b in chunk))
            )  # type: ignore[arg-type]
        )
    return len(pairs)
