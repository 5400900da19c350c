"""Safe image decoding and validation, shared by every service that accepts
uploads.

Order matters: the byte size is checked first (cheap), then the format is
sniffed from magic bytes (the client's filename and content type are never
trusted), then the header's dimensions are checked against the pixel limit
*before* anything is decoded (decompression bombs), and only then is the
image fully decoded, which catches truncated files.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
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
) -> tuple[Image.Image, str]:
    fmt = check_header(data, filename, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedImage(f"{_label(filename)} could not be read as {fmt}: {exc}", "unsupported_image") from None
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
        raise UnsupportedImage(f"{_label(filename)} is damaged or truncated: {exc}", code) from None
    return img, fmt


def inspect_image(data: bytes, filename: str, limits: ImageLimits) -> ImageInfo:
    """Fully validates an upload (decodes it) and describes it."""
    img, fmt = _open(data, filename, limits)
    width, height = img.size
    img.close()
    return ImageInfo(fmt, width, height, len(data), hashlib.sha256(data).hexdigest())


def decode_image(
    data: bytes, filename: str, limits: ImageLimits, floor: Callable[[tuple[int, int]], tuple[int, int]] | None = None
) -> Image.Image:
    """Validates and decodes an upload; the caller converts the mode it needs.

    ``floor`` maps the stored (width, height) to the smallest size the caller
    needs: a JPEG may then be decoded at 1/2, 1/4 or 1/8 scale as long as it
    stays at least that big (see ``Preprocessing.decode_floor``). The limits
    always apply to the stored size."""
    return _open(data, filename, limits, floor)[0]


def resize_to_fit(data: bytes, fmt: str, size: int) -> tuple[bytes, str]:
    """A version whose longest side is at most ``size`` (aspect kept, never
    upscaled). JPEG and WebP stay themselves; other formats become PNG.
    Returns (bytes, content type). ``data`` must already be validated."""
    img = Image.open(io.BytesIO(data), formats=[fmt])
    img.load()
    if max(img.size) > size:
        scale = size / max(img.size)
        target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB").resize(target, Image.Resampling.LANCZOS)
    out_fmt = fmt if fmt in ("JPEG", "WEBP") else "PNG"
    if out_fmt == "JPEG" and img.mode != "RGB":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format=out_fmt, **({"quality": 90} if out_fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue(), FORMATS[out_fmt][1]
