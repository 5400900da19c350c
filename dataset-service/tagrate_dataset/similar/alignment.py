"""Whether one picture is the other, or a crop of it, from their 32x32 grey
pictures (``tagrate_common.images.grey_thumbnail``): the best normalized
correlation between one picture and a region of the other, over regions
from 82 % to 100 % of each side at every offset (in steps of a pixel or
so), in both directions. Re-encodes, resizes, format and metadata changes
and crops of up to ~18 % a side score above 0.9; distinct pictures that
merely look alike (same subject, other shot) score well below, because
their shapes are elsewhere."""

from __future__ import annotations

from functools import cache

import numpy as np

SIDE = 32
# Fractions of a side a region may cover, and offsets per region size.
_SCALES = tuple(1.0 - 0.015 * n for n in range(13))  # 1.0 down to 0.82
_OFFSET_STEP = 0.5  # pixels of the 32
# A direct correlation this high needs no search for a better region.
_SAME = 0.97


@cache
def _samplers() -> np.ndarray:
    """(k, SIDE, SIDE) matrices: row i samples the SIDE pixels of the
    picture (linear interpolation) at the i-th point of one region."""
    out = []
    for scale in _SCALES:
        span = (1.0 - scale) * SIDE
        steps = max(1, round(span / _OFFSET_STEP) + 1)
        for start in np.linspace(0.0, span, steps):
            points = start + scale * (np.arange(SIDE) + 0.5) - 0.5
            points = np.clip(points, 0, SIDE - 1)
            low = np.floor(points).astype(int)
            high = np.minimum(low + 1, SIDE - 1)
            frac = points - low
            matrix = np.zeros((SIDE, SIDE))
            matrix[np.arange(SIDE), low] += 1 - frac
            matrix[np.arange(SIDE), high] += frac
            out.append(matrix)
    return np.stack(out)


def _blur(x: np.ndarray) -> np.ndarray:
    """A light separable blur (1-2-1, twice): the check compares shapes, not
    the finest detail, which resampling and re-encoding change."""
    for _ in range(2):
        padded = np.pad(x, 1, mode="edge")
        x = (padded[:-2, 1:-1] + 2 * padded[1:-1, 1:-1] + padded[2:, 1:-1]) / 4
        padded = np.pad(x, 1, mode="edge")
        x = (padded[1:-1, :-2] + 2 * padded[1:-1, 1:-1] + padded[1:-1, 2:]) / 4
    return x


def _start_regions() -> tuple[int, ...]:
    """Sampler indexes to start from: the whole side, and the middle of
    each smaller size's offsets for a few sizes."""
    starts, index = [], 0
    for scale in _SCALES:
        span = (1.0 - scale) * SIDE
        steps = max(1, round(span / _OFFSET_STEP) + 1)
        if scale in (_SCALES[0], _SCALES[6], _SCALES[12]):
            starts.append(index + steps // 2)
        index += steps
    return tuple(starts)


def _pixels(thumb: bytes) -> np.ndarray:
    return _blur(np.frombuffer(thumb, dtype=np.uint8).astype(np.float64).reshape(SIDE, SIDE))


def _normalized(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit norm over the last two axes (flat: zero)."""
    x = x - x.mean(axis=(-2, -1), keepdims=True)
    norm = np.sqrt((x * x).sum(axis=(-2, -1), keepdims=True))
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-6)


def _best(whole: np.ndarray, part: np.ndarray) -> float:
    """The best correlation of ``part`` with a region of ``whole``: the
    region's rows and columns searched in turn (each search is one batched
    product over every row or column sampler), from a few starting regions."""
    samplers = _samplers()
    transposed = samplers.transpose(0, 2, 1)
    target = _normalized(part)
    best = -1.0
    for start in _STARTS:
        y = start
        for _ in range(3):
            by_x = (samplers[y] @ whole)[None] @ transposed  # (k, SIDE, SIDE)
            scores = (_normalized(by_x) * target).sum(axis=(-2, -1))
            x = int(scores.argmax())
            by_y = samplers @ (whole @ transposed[x])[None]
            scores = (_normalized(by_y) * target).sum(axis=(-2, -1))
            y = int(scores.argmax())
        best = max(best, float(scores[y]))
    return best


_STARTS = _start_regions()


def crop_score(a: bytes, b: bytes) -> float:
    """How well one of the two pictures matches a region of the other
    (normalized correlation, -1..1; 0 when either is flat or malformed)."""
    if len(a) != SIDE * SIDE or len(b) != SIDE * SIDE:
        return 0.0
    pa, pb = _pixels(a), _pixels(b)
    direct = float((_normalized(pa) * _normalized(pb)).sum())
    if direct >= _SAME:  # the same framing (re-encoded, resized): no search needed
        return direct
    return max(direct, _best(pa, pb), _best(pb, pa))
