"""Database operations on stored images: storing images without a rating,
deleting an image with every row that refers to it, caching an image's
feature vector. Plain functions that take a Session; the files are the blob
store's (``blobs.py``), transactions the caller's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, or_
from sqlmodel import Session, select

from tagrate_common.images import ImageInfo

from ..albums import membership as albums
from ..db import insert_missing, upsert
from ..models import (
    DuplicatePair,
    Image,
    ImageFeatures,
    ImageHash,
    ImageTag,
    ImageTagging,
    NotDuplicate,
    PendingScore,
    Prediction,
    Rating,
    User,
    WorkItem,
    utc_now,
)
from ..records import keep_first_name, new_image, require_image
from ..snapshots import bump_versions


@dataclass(frozen=True)
class DeletedImage:
    image: str
    format: str
    ratings_removed: int


def delete_image(session: Session, name: str) -> DeletedImage:
    """Deletes every row of the image: its ratings (moving each rater's
    snapshot), tags, taggings, feature vectors, queued work, its places in
    albums and the image row itself. The files are the caller's, after the commit."""
    image = require_image(session, name)
    image_id = image.id
    raters = select(Rating.user_id).where(Rating.image_id == image_id)
    bump_versions(session, User.id.in_(raters))  # type: ignore[union-attr]
    removed = session.exec(select(func.count()).select_from(Rating).where(Rating.image_id == image_id)).one()
    # Explicit deletes rather than ON DELETE CASCADE alone: the same on a
    # SQLite database opened without foreign keys.
    for model in (Rating, ImageTag, ImageTagging, ImageFeatures, WorkItem, Prediction, PendingScore, ImageHash):
        session.exec(delete(model).where(model.image_id == image_id))  # type: ignore[attr-defined]
    for pairs in (DuplicatePair, NotDuplicate):
        session.exec(delete(pairs).where(or_(pairs.image_a == image_id, pairs.image_b == image_id)))  # type: ignore[arg-type]
    assert image_id is not None
    albums.remove_image(session, image_id)  # it leaves every album, the gaps closed
    session.exec(delete(Image).where(Image.id == image_id))  # type: ignore[arg-type]
    return DeletedImage(name, image.format, removed)


def add_images(session: Session, images: Sequence[tuple[ImageInfo, str]], source: str) -> list[tuple[str, bool]]:
    """Creates the rows of images not stored yet (``(info, original
    filename)``, blobs already stored), queueing their tagging and feature
    extraction; an image already stored keeps its row and its original
    name, and gets ``source`` and a name when it had none. Returns (name, new) per image, in order."""
    now = utc_now()
    out: list[tuple[str, bool]] = []
    for info, filename in images:
        image = session.exec(select(Image).where(Image.sha256 == info.sha256)).first()
        if image is not None:
            if source and not image.source:
                image.source = source
            keep_first_name(image, filename)
            session.flush()
            out.append((image.name, False))
            continue
        image = new_image(session, info, filename, now, source)
        out.append((image.name, True))
    return out


def put_image_features(session: Session, name: str, extractor_id: str, vector: bytes, dim: int) -> None:
    """Stores (or replaces) the image's float32 little-endian feature vector
    from ``extractor_id``. NotFound for an unknown image."""
    image = require_image(session, name)
    values = {"image_id": image.id, "extractor_id": extractor_id, "dim": dim, "vector": vector, "created_at": utc_now()}
    upsert(session, ImageFeatures, values, ["image_id", "extractor_id"])
    # Scored for every user with a model once the vector is there (scoring.py).
    insert_missing(session, PendingScore, [{"image_id": image.id, "enqueued_at": utc_now()}])
