"""Resizing a validated image: upright (EXIF orientation applied), within a
pixel budget for every intermediate, cropped before resizing, wide modes
scaled to 8 bits; and a smaller version of a stored image (thumbnails,
``resize_to_fit``). Decoding and validation are in :mod:`.images`."""

from __future__ import annotations

import io
import math

from PIL import ExifTags, Image

from .errors import PayloadTooLarge
from .images import FORMATS, decode_slot

# The most pixels one resize made to prepare a model input may hold, output
# and Pillow's intermediate (between its horizontal and vertical passes)
# each: 64 MiB at 4 bytes a pixel. With crop-before-resize and the right pass
# order a model input needs about input_size x sqrt(pixel limit) at most
# (448 x 7071 = 3.2M for WD v3 at 50 MP), so any aspect ratio fits.
RESAMPLE_BUDGET_PIXELS = 1 << 24
# Pillow's bicubic filter reaches 2 source pixels either side, scaled up
# when shrinking.
_BICUBIC_SUPPORT = 2.0


# EXIF orientation -> the transpose that makes the image upright (as
# ImageOps.exif_transpose does it).
_UPRIGHT: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = (5, 6, 7, 8)
# Modes Pillow resamples itself; every other one is converted first.
_RESAMPLED_MODES = ("L", "LA", "RGB", "RGBA", "I", "I;16", "F")
_WIDE_MODES = ("I", "I;16", "F")  # become 8-bit after the resize

Box = tuple[float, float, float, float]


def orientation(image: Image.Image) -> int:
    """The image's EXIF orientation (1: stored upright)."""
    value = image.getexif().get(ExifTags.Base.Orientation, 1)
    return value if value in _UPRIGHT else 1


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) once the EXIF orientation is applied."""
    return image.size[::-1] if orientation(image) in _SWAPS_AXES else image.size


def _stored_box(box: Box, upright: tuple[int, int], turn: int) -> Box:
    """``box`` (in upright coordinates) in the stored image's coordinates."""
    width, height = upright
    x0, y0, x1, y1 = box
    if turn in (2, 3):  # mirrored left-right in storage
        x0, x1 = width - x1, width - x0
    if turn in (3, 4):
        y0, y1 = height - y1, height - y0
    if turn in (7, 8):
        x0, x1 = width - x1, width - x0
    if turn in (6, 7):
        y0, y1 = height - y1, height - y0
    if turn in _SWAPS_AXES:
        x0, y0, x1, y1 = y0, x0, y1, x1
    return x0, y0, x1, y1


def _resamplable(image: Image.Image) -> Image.Image:
    """The image in a mode Pillow's bicubic resize takes (the only full-size
    copy a resize makes, when one is needed at all)."""
    if image.mode in _RESAMPLED_MODES:
        return image
    if image.mode.startswith("I;16") or image.mode == "I;32":
        return image.convert("I")
    if image.mode == "1":
        return image.convert("L")
    has_alpha = image.mode in ("PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")


def _rows_or_columns(start: float, end: float, out: int, limit: int) -> int:
    """How many source rows (or columns) Pillow reads to resample [start, end) to ``out``."""
    support = _BICUBIC_SUPPORT * max(1.0, (end - start) / out)
    return min(limit, math.ceil(end + support) - max(0, math.floor(start - support)))


def _resample(image: Image.Image, size: tuple[int, int], box: Box, budget: int) -> Image.Image:
    """Pillow's bicubic resize of ``box`` to ``size``, in whichever pass order
    keeps the intermediate image within ``budget`` pixels; refuses (before
    any work) when neither does or the output itself is over it."""
    (out_w, out_h), (x0, y0, x1, y1) = size, box
    full_width = x0 == 0 and x1 == image.width
    horizontal = out_w != image.width or not full_width
    vertical = out_h != image.height or y0 != 0 or y1 != image.height
    if out_w * out_h > budget:
        raise PayloadTooLarge(
            f"the image would need a {out_w}x{out_h} resize, over the {budget} pixel budget", "resize_too_large"
        )
    if not (horizontal and vertical) or out_w * _rows_or_columns(y0, y1, out_h, image.height) <= budget:
        return image.resize(size, Image.Resampling.BICUBIC, box)  # Pillow: horizontal pass first
    if not full_width or image.width * out_h > budget:
        raise PayloadTooLarge(
            f"resizing a {image.width}x{image.height} image to {out_w}x{out_h} is over the {budget} pixel budget",
            "resize_too_large",
        )
    tall = image.resize((image.width, out_h), Image.Resampling.BICUBIC, (0, y0, image.width, y1))
    return tall.resize(size, Image.Resampling.BICUBIC)


def _value_scale(image: Image.Image) -> float:
    """What 16-bit or 32-bit integer pixels are multiplied by to land on
    0-255: 1/257 when any exceeds 255 (a 16-bit range), else 1. Floats are
    taken as 0-255 already."""
    if image.mode not in ("I", "I;16"):
        return 1.0
    return 1 / 257 if image.getextrema()[1] > 255 else 1.0


def _to_8bit(image: Image.Image, scale: float, keep_alpha: bool) -> Image.Image:
    """8-bit RGB (RGBA with ``keep_alpha`` when there is transparency),
    transparency otherwise composited on white; wide pixels scaled by
    ``scale`` and clipped."""
    if image.mode in _WIDE_MODES:
        image = image.convert("F")
        if scale != 1:
            image = image.point(lambda value: value * scale)
        image = image.convert("L")
    if image.mode in ("LA", "RGBA"):
        rgba = image.convert("RGBA")
        if keep_alpha:
            return rgba
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_upright(
    image: Image.Image,
    size: tuple[int, int],
    box: Box | None = None,
    *,
    budget: int = RESAMPLE_BUDGET_PIXELS,
    keep_alpha: bool = False,
) -> Image.Image:
    """The region ``box`` of the upright image (EXIF orientation applied;
    ``box`` in its coordinates, all of it by default) resized to ``size``
    with Pillow's bicubic filter, as 8-bit RGB (RGBA with ``keep_alpha`` when
    the image has transparency, else composited on white). 16-bit pixels are
    scaled onto 0-255, not clipped.

    Only the region is resampled (Pillow reads the box plus the filter's
    reach), the upright image is never built at full size (the small result
    is turned instead), and the resize is refused with ValueError before it
    starts when its output or intermediate image would exceed ``budget``
    pixels."""
    turn = orientation(image)
    upright = image.size[::-1] if turn in _SWAPS_AXES else image.size
    stored_box = _stored_box(box or (0, 0, *upright), upright, turn)
    stored_size = size[::-1] if turn in _SWAPS_AXES else size
    source = _resamplable(image)
    scale = _value_scale(source)
    if stored_size != source.size or stored_box != (0, 0, *source.size):
        source = _resample(source, stored_size, stored_box, budget)
    if turn in _UPRIGHT:
        source = source.transpose(_UPRIGHT[turn])
    return _to_8bit(source, scale, keep_alpha)


def resize_to_fit(data: bytes, fmt: str, size: int) -> tuple[bytes, str]:
    """A version whose longest side is at most ``size`` (aspect kept, never
    upscaled), upright (EXIF orientation applied, none left in the file).
    JPEG and WebP stay themselves; other formats become PNG, keeping
    transparency; 16-bit images are scaled to 8 bits when resized. Returns
    (bytes, content type). ``data`` must already be validated; the decode
    runs in a :func:`decode_slot` (a JPEG decodes at a reduced scale when
    that still leaves twice the output size)."""
    out_fmt = fmt if fmt in ("JPEG", "WEBP") else "PNG"
    with decode_slot():
        img = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = img.size
        if max(width, height) > size:
            scale = size / max(width, height)
            target = (max(1, round(width * scale)), max(1, round(height * scale)))
            if fmt == "JPEG":
                img.draft(None, (min(width, 2 * target[0]), min(height, 2 * target[1])))
            img.load()
            if upright_size(img) != img.size:
                target = target[::-1]
            # Never more than the decoded image holds: the resize only shrinks.
            img = resize_upright(img, target, budget=width * height, keep_alpha=out_fmt != "JPEG")
        else:
            img.load()
            turn = orientation(img)
            if turn in _UPRIGHT:
                img = img.transpose(_UPRIGHT[turn])
        if out_fmt == "JPEG" and img.mode != "RGB":
            img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, format=out_fmt, **({"quality": 90} if out_fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue(), FORMATS[out_fmt][1]
