"""Real image files for tests, made on the fly (nothing binary is committed)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def make_image(fmt: str = "JPEG", size: tuple[int, int] = (64, 48), seed: int = 0) -> bytes:
    """A small, distinct image per seed: a colour gradient plus seeded noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None, None]
    base = np.concatenate([x.repeat(h, 0), y.repeat(w, 1), np.full((h, w, 1), seed % 256, np.float32)], axis=2)
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def truncated_jpeg(seed: int = 0) -> bytes:
    data = make_image("JPEG", (256, 256), seed)
    return data[: len(data) // 2]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG that is tiny on disk but `width*height` pixels decoded."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def encode(img: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def grey16_png(size: tuple[int, int] = (96, 64), level: int = 30_000) -> bytes:
    """A 16-bit greyscale PNG (Pillow reads it as I;16): a horizontal ramp
    around ``level`` (of 65535)."""
    w, h = size
    ramp = np.linspace(level - 5000, level + 5000, w, dtype=np.float64)[None, :].repeat(h, 0)
    return encode(Image.fromarray(np.clip(ramp, 0, 65535).astype(np.uint16)))


def line_png(width: int, height: int) -> bytes:
    """A tiny PNG of an extreme aspect ratio (50000x1 compresses to ~200 bytes)."""
    return encode(Image.new("RGB", (width, height), (200, 120, 40)))


def rotated_jpeg(upright: Image.Image, orientation: int = 6) -> bytes:
    """A JPEG of ``upright`` stored turned the way a phone stores it, with
    the EXIF orientation that turns it back (6: stored rotated 90 degrees
    counter-clockwise, shown turned clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    turn = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}[orientation]
    return encode(upright.transpose(turn), "JPEG", quality=95, exif=exif.tobytes())
