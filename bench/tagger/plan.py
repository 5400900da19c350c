"""The tagger benchmark's fixed choices: the concurrencies and batch sizes
swept, the photos uploaded and their multipart bodies, the default threads."""

from __future__ import annotations

import io
import os

import skimage.data
from PIL import Image

CONCURRENCIES = (1, 4, 16, 32)
BATCH_SIZES = (1, 2, 4, 8, 16, 32)
BULK_IMAGES = 8  # images per /tagbulk request
TAGGER_CPU_BATCH = 8  # the tagger's default largest batch on a CPU (ModelServiceSettings.batch_size_for)
# scikit-image's bundled photographs, uploaded as JPEG files (400-600 px, 40-90 KB).
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def jpeg_photos() -> list[tuple[str, bytes]]:
    files = []
    for name in PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buf, format="JPEG", quality=92)
        files.append((f"{name}.jpg", buf.getvalue()))
    return files


BOUNDARY = "tagrate-bench-boundary"
MULTIPART_HEADERS = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart(files: list[tuple[str, tuple[str, bytes]]]) -> bytes:
    """A multipart/form-data body with ``(field, (filename, data))`` file parts."""
    parts = []
    for field_name, (filename, data) in files:
        head = (
            f"--{BOUNDARY}\r\n"
            f'Content-Disposition: form-data; name="{field_name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


def default_torch_threads() -> int:
    """Every core, as the tagger does by default. Measured on 2 cores, one
    thread fewer (leaving a core to decoding and the gateway) was slower:
    batched forward passes gain more from the second thread than the rest
    loses by sharing it."""
    return os.cpu_count() or 1
