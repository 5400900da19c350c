"""Real photographs (scikit-image's samples) and their near-duplicate
variants, made on the fly: a low-quality re-encode, half size, 5 % and 10 %
crops, EXIF stripped (the original carries EXIF) and PNG instead of JPEG."""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image

# Photographs of different things; textures (brick, grass, gravel) are left
# out: a crop of a uniform texture is indistinguishable from another shot.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry")
VARIANTS = ("q30", "half", "crop5", "crop10", "exif_stripped", "png")


def photo(name: str) -> Image.Image:
    pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return Image.fromarray(pixels[..., :3].astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 90, exif: bool = False) -> bytes:
    buf = io.BytesIO()
    extra = {}
    if exif:
        info = Image.Exif()
        info[0x010F] = "tagrate test camera"  # Make
        info[0x0132] = "2026:12:07 12:00:00"  # DateTime
        extra["exif"] = info.tobytes()
    img.save(buf, format="JPEG", quality=quality, **extra)
    return buf.getvalue()


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def original(name: str) -> bytes:
    """The photograph as a JPEG with EXIF, as a camera would store it."""
    return jpeg(photo(name), exif=True)


def variant(name: str, kind: str) -> bytes:
    img = photo(name)
    w, h = img.size
    if kind == "q30":
        return jpeg(img, quality=30, exif=True)
    if kind == "half":
        return jpeg(img.resize((w // 2, h // 2), Image.Resampling.LANCZOS))
    if kind == "crop5":  # 5 % of each side, split between both edges
        dx, dy = round(w * 0.025), round(h * 0.025)
        return jpeg(img.crop((dx, dy, w - dx, h - dy)), exif=True)
    if kind == "crop10":  # 10 % off the left and the top
        return jpeg(img.crop((round(w * 0.1), round(h * 0.1), w, h)))
    if kind == "exif_stripped":
        return jpeg(img)
    if kind == "png":
        return png(img)
    raise ValueError(kind)
