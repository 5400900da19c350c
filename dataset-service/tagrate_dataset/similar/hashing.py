"""Perceptual hashes of stored images: the row of an image's hash (with
its bands), the images whose hash is within a few bits of one (index
probes on the bands), and the background work that hashes images stored
before hashes were made at upload (work kind ``hash``).

The hash itself is ``tagrate_common.images.difference_hash``, computed from
the same decode that validates an upload. Two hashes at most
``len(HASH_BANDS) - 1`` bits apart agree on at least one band (pigeonhole),
so the band indexes find every such image; hashes further apart are found
when they happen to share a band, and near-duplicates the hash misses
(crops) are found through the feature vectors (``duplicates.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_
from sqlmodel import Session, select

from tagrate_common.images import ImageLimits, inspect_image
from tagrate_common.perceptual import unsigned_hash

from ..db import Database, upsert
from ..images.blobs import BlobStore
from ..models import Image, ImageHash, NotDuplicate, WorkKind
from ..peers import ImageFile
from ..records import StoredImage
from ..work.imagework import ImageWork
from .bands import bands, hash_row

# The key hash results are stored under (the work queue's "model").
HASH_KEY = "dhash-64-v1"


def distance(a: int, b: int) -> int:
    """Bits in which two hashes differ."""
    return (unsigned_hash(a) ^ unsigned_hash(b)).bit_count()


def put_hash(session: Session, image_id: int, dhash: int, thumb: bytes) -> None:
    upsert(session, ImageHash, hash_row(image_id, dhash, thumb), ["image_id"])


def near_hashes(
    session: Session, image_id: int, dhash: int, max_distance: int, limit: int = 64
) -> list[tuple[int, int]]:
    """(image id, distance) of other images whose hash shares a band with
    ``dhash`` and is at most ``max_distance`` bits away, nearest first,
    leaving out those marked as not duplicates of ``image_id``."""
    conditions = [getattr(ImageHash, f"band{n}") == value for n, value in enumerate(bands(dhash))]
    rows = session.exec(
        select(ImageHash.image_id, ImageHash.dhash).where(or_(*conditions), ImageHash.image_id != image_id).limit(4096)
    ).all()
    near = sorted((found, d) for found, other in rows if (d := distance(dhash, other)) <= max_distance)
    if not near:
        return []
    apart = session.exec(
        select(NotDuplicate.image_a, NotDuplicate.image_b).where(
            or_(NotDuplicate.image_a == image_id, NotDuplicate.image_b == image_id)
        )
    ).all()
    excluded = {a if b == image_id else b for a, b in apart}
    near = [(found, d) for found, d in near if found not in excluded]
    return sorted(near, key=lambda item: (item[1], item[0]))[:limit]


def near_duplicate_name(session: Session, name: str, max_distance: int) -> str | None:
    """The stored image nearest by hash to the image ``name`` (within
    ``max_distance`` bits), or None; None too when ``name`` has no hash."""
    row = session.exec(
        select(ImageHash.image_id, ImageHash.dhash)
        .join(Image, Image.id == ImageHash.image_id)
        .where(Image.name == name)
    ).first()
    if row is None:
        return None
    near = near_hashes(session, row[0], row[1], max_distance, limit=1)
    if not near:
        return None
    return session.exec(select(Image.name).where(Image.id == near[0][0])).first()


def near_duplicates(db: Database, names: Sequence[str], max_distance: int) -> dict[str, str]:
    """For each of ``names`` (images just stored) that has a stored
    near-duplicate by hash, that image's name (read after the upload's commit)."""
    if not names:
        return {}
    with db.read() as session:
        found = {name: near_duplicate_name(session, name, max_distance) for name in names}
    return {name: other for name, other in found.items() if other is not None}


class HashWork(ImageWork[str, tuple[int, bytes]]):
    """Hashes images that have no hash (stored before hashes were made at
    upload) as background work; runs in the dataset service itself."""

    kind = WorkKind.HASH
    service = "dataset service's hasher"

    def __init__(self, db: Database, blobs: BlobStore, limits: ImageLimits, batch_size: int = 32) -> None:
        super().__init__(db, blobs, batch_size)
        self.limits = limits

    @property
    def configured(self) -> bool:
        return True

    def current_model(self) -> str:
        return HASH_KEY

    def model_key(self, model: str) -> str:
        return model

    def run_model(self, model: str, files: Sequence[ImageFile]) -> list[tuple[int, bytes]]:
        out = []
        for file in files:
            info = inspect_image(file.data, file.name, self.limits, perceptual=True)
            assert info.dhash is not None and info.thumb is not None
            out.append((info.dhash, info.thumb))
        return out

    def store_results(self, session: Session, model: str, results: list[tuple[StoredImage, tuple[int, bytes]]]) -> None:
        for image, (dhash, thumb) in results:
            put_hash(session, image.image_id, dhash, thumb)
