"""The image blob store: original uploads, content-addressed by sha256, plus
a cache of resized versions.

Layout: ``<blob_dir>/<sha[:2]>/<sha>.<ext>`` for originals and
``<cache_dir>/<size>/<sha[:2]>/<sha>.<ext>`` for resized versions. Names are
always validated ``<sha256>.<ext>`` strings before they get here, so no path
is ever built from client input.

Every file appears atomically: it is written to a temporary file in the same
folder, flushed and fsynced, renamed into place, and the folder is fsynced so
the rename itself survives a crash. A reader therefore sees either nothing or
the whole file, and the service commits an image's row only after ``put``
returned, so no row ever points at a missing or partial blob.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tagrate_common.files import TEMP_PREFIX, write_atomically
from tagrate_common.images import FORMATS, resize_to_fit

log = logging.getLogger(__name__)

# resize_to_fit keeps JPEG and WebP, and turns every other format into PNG.
_RESIZED_FORMAT = {"JPEG": "JPEG", "WEBP": "WEBP"}
_LOCK_STRIPES = 64


def resized_content_type(fmt: str) -> str:
    """The content type of resized versions of an image in Pillow format ``fmt``."""
    return FORMATS[_RESIZED_FORMAT.get(fmt, "PNG")][1]


class BlobStore:
    """Original image files and their resized versions on the local file
    system (a persistent volume when deployed)."""

    def __init__(self, blob_dir: Path, cache_dir: Path) -> None:
        self.blob_dir = Path(blob_dir)
        self.cache_dir = Path(cache_dir)
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Concurrent requests for the same (name, size) take the same lock, so
        # the version is generated once and the others wait for it. A fixed set
        # of striped locks keeps memory flat however many versions exist.
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

    def path(self, name: str) -> Path:
        """Where the original ``<sha256>.<ext>`` lives (whether or not it exists)."""
        return self.blob_dir / name[:2] / name

    def put(self, name: str, data: bytes) -> bool:
        """Stores ``data`` under ``name`` durably; returns False when it was
        already stored (the same name always means the same bytes)."""
        path = self.path(name)
        if path.is_file() and path.stat().st_size == len(data):
            return False
        write_atomically(path, data)
        log.debug("stored blob %s (%d bytes)", name, len(data))
        return True

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def get(self, name: str) -> bytes:
        """The original bytes; FileNotFoundError if missing."""
        return self.path(name).read_bytes()

    def resized_path(self, name: str, fmt: str, size: int) -> Path:
        """Where the version of ``name`` fitting ``size`` pixels is cached."""
        sha = name.split(".", 1)[0]
        ext = FORMATS[_RESIZED_FORMAT.get(fmt, "PNG")][0]
        return self.cache_dir / str(size) / sha[:2] / f"{sha}.{ext}"

    def resized(self, name: str, fmt: str, size: int) -> tuple[bytes, str]:
        """The original scaled so its longest side is at most ``size`` (never
        upscaled), generated on first use and cached; returns (bytes, content
        type). ``fmt`` is the original's Pillow format name."""
        path = self.resized_path(name, fmt, size)
        content_type = resized_content_type(fmt)
        if path.is_file():
            return path.read_bytes(), content_type
        with self._lock_for(name, size):
            if path.is_file():  # generated while we waited
                return path.read_bytes(), content_type
            data, content_type = resize_to_fit(self.get(name), fmt, size)
            write_atomically(path, data)
            log.debug("cached %s at %dpx", name, size)
            return data, content_type

    def _lock_for(self, name: str, size: int) -> threading.Lock:
        return self._locks[hash((name, size)) % _LOCK_STRIPES]

    def temp_files(self) -> Iterator[Path]:
        """Unfinished writes (left behind only when a process died mid-write)."""
        for root in (self.blob_dir, self.cache_dir):
            yield from root.rglob(f"{TEMP_PREFIX}*")

    def remove_stale_temp_files(self, older_than_seconds: float) -> int:
        """Deletes unfinished writes older than the given age; returns how many.
        Younger ones may still be in progress in another process."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in list(self.temp_files()):
            try:
                if path.stat().st_mtime <= cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # finished or removed meanwhile
        if removed:
            log.info("removed %d unfinished blob writes left by a crash", removed)
        return removed
