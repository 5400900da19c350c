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
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageFile, UnidentifiedImageError

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
    # The perceptual hash and the small grey picture (``perceptual.py``)
    # when asked for.
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
    ``perceptual``, also its perceptual hash and small grey picture
    (``perceptual.py``), from the same decode."""
    dhash, thumb = None, None
    with decode_slot():
        img, fmt, (width, height) = _open(data, filename, limits, _validation_size)
        if perceptual:
            from .perceptual import difference_hash, grey_thumbnail  # it imports this module

            dhash, thumb = difference_hash(img), grey_thumbnail(img)
        img.close()
    return ImageInfo(fmt, width, height, len(data), hashlib.sha256(data).hexdigest(), dhash, thumb)


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
