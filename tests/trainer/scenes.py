"""Procedurally drawn scenes for a rater with a real taste: they like red
circles and dislike blue stripes. Each scene mixes the two motifs in a
proportion ``t`` (0: all stripes, 1: all circles) over a random background,
with random positions and sizes, so what an image shows decides its rating
but no two images are alike."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64


def scene(t: float, seed: int, size: int = SIZE) -> bytes:
    """A PNG scene: about ``t`` of the picture red circles, the rest blue stripes."""
    rng = np.random.default_rng(seed)
    background = tuple(int(v) for v in rng.integers(170, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    # Stripes first, over the whole picture, in proportion to 1 - t.
    stripes = round((1.0 - t) * 8)
    width = max(2, size // 16)
    for i in range(stripes):
        x = int((i + rng.uniform(0, 0.5)) * size / 8)
        blue = (int(rng.integers(0, 60)), int(rng.integers(40, 110)), int(rng.integers(170, 256)))
        draw.rectangle([x, 0, x + width, size], fill=blue)
    # Circles on top, in proportion to t.
    for _ in range(round(t * 7)):
        r = int(rng.integers(size // 10, size // 5))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        red = (int(rng.integers(190, 256)), int(rng.integers(0, 50)), int(rng.integers(0, 50)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=red)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def taste(t: float, rng: np.random.Generator, noise: float = 0.05) -> float:
    """The rater's rating of a scene with proportion ``t``: high for red
    circles, low for blue stripes, with some noise; in [0, 1]."""
    return float(np.clip(0.1 + 0.8 * t + rng.normal(0.0, noise), 0.0, 1.0))


def rated_scenes(count: int, seed: int) -> list[tuple[bytes, float, float]]:
    """``count`` distinct scenes as (png, t, rating)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        t = float(rng.uniform(0.0, 1.0))
        out.append((scene(t, seed * 100_000 + i), t, round(taste(t, rng), 4)))
    return out
