"""Perceptual fingerprints of a decoded image, made from the decode that
validates an upload (``images.inspect_image(perceptual=True)``): a 64-bit
difference hash, which re-encoding, resizing, format and metadata changes
barely move, and the picture in grey at 32x32, to check that one picture is
another or a crop of it (the dataset service's ``similar/alignment.py``)."""

from __future__ import annotations

import itertools

from PIL import Image

from .image_resize import _SWAPS_AXES, _UPRIGHT, _WIDE_MODES, orientation

# The difference hash's grid: 8 rows of 9 samples give 64 bits.
_DHASH_ROWS = 8


# The side of :func:`grey_thumbnail`.
THUMB_SIDE = 32


def _upright_grey(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The picture upright, in grey, resampled to ``size`` (width, height)."""
    turn = orientation(img)
    grey = img.convert("F") if img.mode in _WIDE_MODES else img.convert("L")
    stored = size[::-1] if turn in _SWAPS_AXES else size
    small = grey.resize(stored, Image.Resampling.BILINEAR, reducing_gap=2.0)
    if turn in _UPRIGHT:
        small = small.transpose(_UPRIGHT[turn])
    return small


def grey_thumbnail(img: Image.Image) -> bytes:
    """The upright picture in grey at 32x32 (aspect not kept), one byte a
    pixel: enough to check that one picture is a crop of another."""
    small = _upright_grey(img, (THUMB_SIDE, THUMB_SIDE))
    if small.mode != "L":  # wide samples: stretched to 8 bits (the check is about shapes, not levels)
        low, high = small.getextrema()
        scale = 255.0 / (high - low) if high > low else 0.0
        small = small.point(lambda v: (v - low) * scale).convert("L")
    return small.tobytes()


def difference_hash(img: Image.Image) -> int:
    """A 64-bit perceptual hash (dHash) of a decoded image: the upright
    picture reduced to 9x8 grey samples, one bit per horizontal pair (the
    left one brighter). Re-encoding, resizing, format changes and metadata
    barely change it. Returned as a signed 64-bit integer (what a BIGINT
    column holds); :func:`unsigned_hash` gives the bit pattern back."""
    small = _upright_grey(img, (_DHASH_ROWS + 1, _DHASH_ROWS))
    value = 0
    for row in range(_DHASH_ROWS):
        line = [small.getpixel((column, row)) for column in range(_DHASH_ROWS + 1)]
        for left, right in itertools.pairwise(line):
            value = (value << 1) | (left > right)  # type: ignore[operator]
    return value - (1 << 64) if value >= 1 << 63 else value


def unsigned_hash(value: int) -> int:
    """The 64-bit pattern of a hash stored as a signed integer."""
    return value & ((1 << 64) - 1)
