"""Safe image decoding and validation, shared by every service that accepts
uploads.

Order matters: the byte size is checked first (cheap), then the format is
sniffed from magic bytes (the client's filename and content type are never
trusted), then the header's dimensions are checked against the pixel limit
*before* anything is decoded (decompression bombs), and only then is the
image decoded, which catches truncated and damaged files. A JPEG is
validated by a decode at 1/8 scale (libjpeg's DCT scaling): every
entropy-coded segment is still read and Huffman-decoded, so truncation and
corruption fail exactly as in a full decode, for a fraction of the cost
(the inverse DCT and colour conversion of an eighth of the pixels).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import math
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageFile, UnidentifiedImageError

from .errors import PayloadTooLarge, TagrateError, UnsupportedImage

# Pillow's own bomb check is global and warns below twice its limit; tagrate
# checks the header against its configured limit instead (see inspect_image).
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Pillow format name -> (file extension, content type)
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
    "BMP": ("bmp", "image/bmp"),
}
CONTENT_TYPES: dict[str, str] = {ext: ctype for ext, ctype in FORMATS.values()}
SUPPORTED = "JPEG, PNG, WebP, GIF or BMP"

# Pillow keeps RGB, RGBA, LA, CMYK, I (32-bit int) and F (float) pixels in 4
# bytes each, and nothing a supported file decodes to is wider (16-bit PNGs
# become I;16, 2 bytes, or 8-bit RGB/RGBA): a decoded image holds at most
# this many bytes per pixel of the pixel limit.
DECODED_BYTES_PER_PIXEL = 4
# The most pixels one resize made to prepare a model input may hold, output
# and Pillow's intermediate (between its horizontal and vertical passes)
# each: 64 MiB at 4 bytes a pixel. With crop-before-resize and the right pass
# order a model input needs about input_size x sqrt(pixel limit) at most
# (448 x 7071 = 3.2M for WD v3 at 50 MP), so any aspect ratio fits.
RESAMPLE_BUDGET_PIXELS = 1 << 24
# Pillow's bicubic filter reaches 2 source pixels either side, scaled up
# when shrinking.
_BICUBIC_SUPPORT = 2.0
_OBJECT_REPR = re.compile(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# One full decode per core at a time in the whole process: more would only
# take turns on the cores, and each holds a full-size image. The peak of
# decoded pixels is then known: slots x pixel limit x DECODED_BYTES_PER_PIXEL.
DECODE_SLOTS = _cores()
_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


def set_decode_slots(slots: int) -> None:
    """Sets how many full decodes may run at once in this process (0: one
    per core). Called once at start-up, before any decode (see
    ``ServiceSettings.decode_slots``)."""
    global DECODE_SLOTS, _decode_slots
    DECODE_SLOTS = slots or _cores()
    _decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


@contextlib.contextmanager
def decode_slot() -> Iterator[None]:
    """Holds one of the process's decode slots (waits for a free one). Every
    full decode runs inside one: :func:`inspect_image` and
    :func:`resize_to_fit` take their own; callers of :func:`decode_image`
    hold one while the decoded image lives. Not re-entrant."""
    with _decode_slots:
        yield


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's name, e.g. "JPEG"
    width: int
    height: int
    size_bytes: int
    sha256: str
    # The perceptual hash (:func:`difference_hash`) and the small grey
    # picture (:func:`grey_thumbnail`) when asked for.
    dhash: int | None = None
    thumb: bytes | None = None

    @property
    def ext(self) -> str:
        return FORMATS[self.format][0]

    @property
    def content_type(self) -> str:
        return FORMATS[self.format][1]

    @property
    def name(self) -> str:
        """The stored name: ``<sha256>.<ext>``."""
        return f"{self.sha256}.{self.ext}"


def sniff_format(head: bytes) -> str | None:
    """The Pillow format name the magic bytes announce, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and len(head) >= 26:
        return "BMP"
    return None


def _label(filename: str) -> str:
    return f"'{filename}'" if filename else "the uploaded file"


@contextlib.contextmanager
def naming_file(index: int, filename: str) -> Iterator[None]:
    """Re-raises an image error from a bulk upload so its message starts with
    the file's position (1-based, upload order) and name: "file 2 ('x.txt')
    is not ...". The gateway and every model service word it this way."""
    try:
        yield
    except TagrateError as exc:
        label = _label(filename)  # how this module's messages start
        named = f"file {index} ({label})" if filename else f"file {index}"
        message = named + exc.message[len(label) :] if exc.message.startswith(label) else f"{named}: {exc.message}"
        raise type(exc)(message, exc.code) from None


def check_size(size: int, filename: str, limits: ImageLimits) -> None:
    """Raises when a file is empty or over the per-file limit."""
    if size == 0:
        raise UnsupportedImage(f"{_label(filename)} is empty; upload a {SUPPORTED} image", "empty_file")
    if size > limits.max_bytes:
        raise PayloadTooLarge(
            f"{_label(filename)} is larger than the {limits.max_bytes} byte limit per file", "file_too_large"
        )


def check_header(data: bytes, filename: str, limits: ImageLimits) -> str:
    """Cheap checks that need no decoding (size and magic bytes); returns the
    format. The gateway runs these; services run :func:`inspect_image`."""
    check_size(len(data), filename, limits)
    fmt = sniff_format(data[:32])
    if fmt is None:
        raise UnsupportedImage(f"{_label(filename)} is not a {SUPPORTED} image", "unsupported_image")
    return fmt


def _open(
    data: bytes, filename: str, limits: ImageLimits, floor: Callable[[tuple[int, int]], tuple[int, int]] | None = None
) -> tuple[Image.Image, str, tuple[int, int]]:
    """The decoded image (a JPEG at the scale ``floor`` allows), its format
    and its stored (width, height)."""
    fmt = check_header(data, filename, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except UnidentifiedImageError:
        raise UnsupportedImage(
            f"{_label(filename)} starts like a {fmt} image but its header is not valid {fmt}", "unsupported_image"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedImage(
            f"{_label(filename)} could not be read as {fmt}: {_plain(exc)}", "unsupported_image"
        ) from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise UnsupportedImage(f"{_label(filename)} has no pixels", "unsupported_image")
    if width * height > limits.max_pixels:
        raise PayloadTooLarge(
            f"{_label(filename)} is {width}x{height} pixels, more than the {limits.max_pixels} pixel limit",
            "too_many_pixels",
        )
    if floor is not None and fmt == "JPEG":
        img.draft(None, floor(img.size))  # DCT scaling: at least that size, decoded for a fraction of the cost
    try:
        img.load()  # GIF: the first frame
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        code = "truncated_image" if "truncated" in str(exc) else "unsupported_image"
        raise UnsupportedImage(f"{_label(filename)} is damaged or truncated: {_plain(exc)}", code) from None
    return img, fmt, (width, height)


def _plain(exc: BaseException) -> str:
    """Pillow's message without the internal object reprs some of them
    carry (``<_io.BytesIO object at 0x...>``): they say nothing to a client."""
    text = _OBJECT_REPR.sub("", str(exc)).strip().rstrip(":").strip()
    return text or "the file's data is not valid"


def _validation_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size a JPEG is validated at: 1/8 scale, the smallest libjpeg decodes."""
    return max(1, size[0] // 8), max(1, size[1] // 8)


def inspect_image(data: bytes, filename: str, limits: ImageLimits, perceptual: bool = False) -> ImageInfo:
    """Fully validates an upload (decodes all of it, a JPEG at 1/8 scale, in
    a decode slot) and describes it (at its stored size); with
    ``perceptual``, also its :func:`difference_hash`, from the same decode."""
    dhash, thumb = None, None
    with decode_slot():
        img, fmt, (width, height) = _open(data, filename, limits, _validation_size)
        if perceptual:
            dhash, thumb = difference_hash(img), grey_thumbnail(img)
        img.close()
    return ImageInfo(fmt, width, height, len(data), hashlib.sha256(data).hexdigest(), dhash, thumb)


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


def decode_image(
    data: bytes, filename: str, limits: ImageLimits, floor: Callable[[tuple[int, int]], tuple[int, int]] | None = None
) -> Image.Image:
    """Validates and decodes an upload; the caller converts the mode it needs.

    ``floor`` maps the stored (width, height) to the smallest size the caller
    needs: a JPEG may then be decoded at 1/2, 1/4 or 1/8 scale as long as it
    stays at least that big (see ``Preprocessing.decode_floor``). The limits
    always apply to the stored size. The caller holds a :func:`decode_slot`
    for as long as the image lives."""
    return _open(data, filename, limits, floor)[0]


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
