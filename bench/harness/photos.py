"""Small real photos (scikit-image's samples at 320x240): a fixed pool, and a
new distinct JPEG on demand; and a multipart/form-data body to upload them."""

from __future__ import annotations

import hashlib
import io
import random
import uuid

import numpy as np
from PIL import Image

POOL_IMAGES = 8  # distinct photos /tag and /ratebulk draw from
PHOTO_SIZE = (320, 240)


class Photos:
    """Small real photos: a fixed pool, and a new distinct one on demand."""

    def __init__(self, seed: int) -> None:
        import skimage.data

        sources = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
        bases = []
        for pixels in sources:
            image = Image.fromarray(pixels).convert("RGB").resize(PHOTO_SIZE)
            bases += [np.array(image), np.array(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
        self.bases = bases
        self.rng = random.Random(seed)
        self.seen: set[bytes] = set()
        self.pool = [self._encode(bases[i % len(bases)]) for i in range(POOL_IMAGES)]
        self.seen.update(hashlib.sha256(data).digest() for data in self.pool)

    @staticmethod
    def _encode(pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=88)
        return buf.getvalue()

    def new(self, base: int | None = None) -> bytes:
        """A JPEG never returned before: base photo ``base`` (default: a random
        one) with one random pixel set to a random colour (restored after
        encoding, so no copy)."""
        while True:
            pixels = self.bases[base] if base is not None else self.rng.choice(self.bases)
            y, x = self.rng.randrange(pixels.shape[0]), self.rng.randrange(pixels.shape[1])
            old = pixels[y, x].copy()
            pixels[y, x] = [self.rng.randrange(256) for _ in range(3)]
            data = self._encode(pixels)
            pixels[y, x] = old
            digest = hashlib.sha256(data).digest()
            if digest not in self.seen:  # a change the quantisation erased: draw again
                self.seen.add(digest)
                return data


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}
