"""The row of an image's perceptual hash: the hash, its bands (see
``models.HASH_BANDS``) and its small grey picture. Kept apart from
``hashing.py`` so that creating an image (``records.py``) needs nothing else."""

from __future__ import annotations

from tagrate_common.perceptual import unsigned_hash

from ..models import HASH_BANDS


def bands(dhash: int) -> list[int]:
    """The hash's bands, as small integers."""
    bits = unsigned_hash(dhash)
    return [(bits >> start) & ((1 << width) - 1) for start, width in HASH_BANDS]


def hash_row(image_id: int, dhash: int, thumb: bytes) -> dict[str, object]:
    return {"image_id": image_id, "dhash": dhash, "thumb": thumb, "grouped": False} | {
        f"band{n}": value for n, value in enumerate(bands(dhash))
    }
