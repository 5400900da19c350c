"""The image blob store: original uploads, content-addressed by sha256, plus
a cache of resized versions.

Layout: ``<blob_dir>/<sha[:2]>/<sha>.<ext>`` for originals,
``<cache_dir>/<size>/<sha[:2]>/<sha>.<ext>`` for resized versions and
``<cache_dir>/square-<size>/<sha[:2]>/<sha>.webp`` for thumbnails. Names are
always validated ``<sha256>.<ext>`` strings before they get here, so no path
is ever built from client input.

Every file appears atomically: it is written to a temporary file in the same
folder, flushed and fsynced, renamed into place, and the folder is fsynced so
the rename itself survives a crash. A reader therefore sees either nothing or
the whole file, and the service commits an image's row only after ``put``
returned, so no row ever points at a missing or partial blob.

Deleting an image works the other way round: its rows go first (one
transaction), then its files (:meth:`BlobStore.remove`). A crash between the
two leaves files without a row, never served (every read starts from the
row) and removed on the next start by :meth:`BlobStore.collect_orphans`.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from PIL import Image

from tagrate_common.files import TEMP_PREFIX, ensure_free_space, free_bytes, out_of_space, write_atomically
from tagrate_common.image_resize import resize_to_fit, resize_upright, upright_size
from tagrate_common.images import FORMATS, decode_slot

from .thumbnails import ThumbnailWarmer

log = logging.getLogger(__name__)

# resize_to_fit keeps JPEG and WebP, and turns every other format into PNG.
_RESIZED_FORMAT = {"JPEG": "JPEG", "WEBP": "WEBP"}
_LOCK_STRIPES = 64
_THUMBNAIL_PREFIX = "square-"
THUMBNAIL_CONTENT_TYPE = "image/webp"
_ORPHAN_BATCH = 500
# A stored name's extension -> the Pillow format it was stored as.
_FORMAT_OF_EXT = {ext: fmt for fmt, (ext, _) in FORMATS.items()}


def square_thumbnail(data: bytes, fmt: str, size: int) -> bytes:
    """The centre square of the upright image (EXIF orientation applied) as
    WebP, ``size`` pixels a side, or the short side when that is smaller
    (never upscaled). ``data`` must already be validated; the decode runs in
    a :func:`decode_slot` (a JPEG decodes at a reduced scale when that still
    leaves twice the output size)."""
    with decode_slot():
        img = Image.open(io.BytesIO(data), formats=[fmt])
        width, height = img.size
        short = min(width, height)
        target = min(size, short)
        if fmt == "JPEG" and 2 * target < short:
            factor = 2 * target / short
            img.draft(None, (max(1, round(width * factor)), max(1, round(height * factor))))
        img.load()
        up_w, up_h = upright_size(img)
        side = min(up_w, up_h)
        box = ((up_w - side) / 2, (up_h - side) / 2, (up_w + side) / 2, (up_h + side) / 2)
        square = resize_upright(
            img, (target, target), box, budget=max(img.width * img.height, target * target), keep_alpha=True
        )
        buf = io.BytesIO()
        square.save(buf, format="WEBP", quality=90)
    return buf.getvalue()


def resized_content_type(fmt: str) -> str:
    """The content type of resized versions of an image in Pillow format ``fmt``."""
    return FORMATS[_RESIZED_FORMAT.get(fmt, "PNG")][1]


class BlobStore:
    """Original image files and their resized versions on the local file
    system (a persistent volume when deployed)."""

    def __init__(self, blob_dir: Path, cache_dir: Path, min_free_bytes: int = 0, headroom_bytes: int = 0) -> None:
        self.blob_dir = Path(blob_dir)
        self.cache_dir = Path(cache_dir)
        # Uploads are refused when they would leave less than this free...
        self.min_free_bytes = min_free_bytes
        # ...and the disk counts as low (readiness) when the largest upload allowed would be.
        self.headroom_bytes = headroom_bytes
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Concurrent requests for the same (name, size) take the same lock, so
        # the version is generated once and the others wait for it. A fixed set
        # of striped locks keeps memory flat however many versions exist.
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._warmer: ThumbnailWarmer | None = None
        self._warm_size = 0

    def warm_thumbnails(self, size: int) -> ThumbnailWarmer:
        """From now on, every :meth:`put` queues the ``size`` px thumbnail of
        the image for generation in the background (see ``thumbnails.py``)."""
        self._warm_size = size
        self._warmer = ThumbnailWarmer(self._warm)
        return self._warmer

    def _warm(self, name: str) -> None:
        self.thumbnail(name, _FORMAT_OF_EXT[name.rsplit(".", 1)[1]], self._warm_size)
        # A delete that removed the image's files while the thumbnail was
        # being made has missed it: remove it here. (A delete after this
        # check finds it among the image's files.)
        if not self.exists(name):
            self.thumbnail_path(name, self._warm_size).unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """Where the original ``<sha256>.<ext>`` lives (whether or not it exists)."""
        return self.blob_dir / name[:2] / name

    def put(self, name: str, data: bytes) -> bool:
        """Stores ``data`` under ``name`` durably; returns False when it was
        already stored (the same name always means the same bytes). With
        :meth:`warm_thumbnails`, the image's thumbnail is queued either way
        (one already made is not made again)."""
        path = self.path(name)
        if path.is_file() and path.stat().st_size == len(data):
            stored = False
        else:
            # Refused before a byte is written when the disk is nearly full;
            # a disk that fills up anyway leaves no half-written file (the
            # temporary one is removed) and is a 507 too, never a 500.
            ensure_free_space(self.blob_dir, len(data), self.min_free_bytes)
            try:
                write_atomically(path, data)
            except OSError as exc:
                full = out_of_space(exc)
                if full is None:
                    raise
                raise full from exc
            log.debug("stored blob %s (%d bytes)", name, len(data))
            stored = True
        if self._warmer is not None and not self.thumbnail_path(name, self._warm_size).is_file():
            self._warmer.submit(name)
        return stored

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
            try:
                write_atomically(path, data)
            except OSError as exc:
                if out_of_space(exc) is None:
                    raise
                log.warning("disk full: %s at %dpx served without caching it", name, size)
                return data, content_type
            log.debug("cached %s at %dpx", name, size)
            return data, content_type

    def low_on_space(self) -> bool:
        """Whether the largest upload allowed would be refused now (less than
        the reserve plus one upload free)."""
        try:
            return free_bytes(self.blob_dir) < max(self.min_free_bytes + self.headroom_bytes, 1)
        except OSError:
            return True

    def thumbnail_path(self, name: str, size: int) -> Path:
        """Where the ``size`` px square thumbnail of ``name`` is cached."""
        sha = name.split(".", 1)[0]
        return self.cache_dir / f"{_THUMBNAIL_PREFIX}{size}" / sha[:2] / f"{sha}.webp"

    def thumbnail(self, name: str, fmt: str, size: int) -> bytes:
        """The square WebP thumbnail of ``name`` (see :func:`square_thumbnail`),
        generated on first use and cached; concurrent first requests in this
        process generate it once (the others wait for it). FileNotFoundError
        when the original is missing."""
        path = self.thumbnail_path(name, size)
        if path.is_file():
            return path.read_bytes()
        with self._lock_for(name, -size):
            if path.is_file():  # generated while we waited
                return path.read_bytes()
            data = square_thumbnail(self.get(name), fmt, size)
            try:
                write_atomically(path, data)
            except OSError as exc:
                if out_of_space(exc) is None:
                    raise
                log.warning("disk full: the %dpx thumbnail of %s served without caching it", size, name)
                return data
            log.debug("cached %s thumbnail at %dpx", name, size)
            return data

    def files_of(self, sha: str) -> list[Path]:
        """Every file stored for the image with this sha256: the original and
        each cached version and thumbnail."""
        paths = list((self.blob_dir / sha[:2]).glob(f"{sha}.*"))
        for folder in self.cache_dir.iterdir():
            if folder.is_dir():
                paths += (folder / sha[:2]).glob(f"{sha}.*")
        return paths

    def remove(self, name: str) -> int:
        """Deletes the original and every cached version of ``name`` (whose
        row is already gone); returns how many files were removed."""
        removed = 0
        for path in self.files_of(name.split(".", 1)[0]):
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass  # removed meanwhile
        return removed

    def collect_orphans(
        self, stored: Callable[[Iterable[str]], set[str]], older_than_seconds: float, max_seconds: float
    ) -> int:
        """Deletes files (originals, cached versions, thumbnails) of images
        that have no row: left by a crash during a delete, or by an upload
        whose row was never committed. ``stored`` says which of some sha256s
        have a row. Files younger than ``older_than_seconds`` may belong to
        an upload still in progress elsewhere and are kept. Stops after
        ``max_seconds`` (the rest waits for the next start); returns how
        many files were removed."""
        deadline = time.monotonic() + max_seconds
        cutoff = time.time() - older_than_seconds
        removed = 0
        batch: list[Path] = []

        def sweep() -> int:
            shas = {path.name.split(".", 1)[0] for path in batch}
            keep = stored(shas)
            count = 0
            for path in batch:
                if path.name.split(".", 1)[0] in keep:
                    continue
                try:
                    if path.stat().st_mtime <= cutoff:
                        path.unlink()
                        count += 1
                except FileNotFoundError:
                    pass
            batch.clear()
            return count

        for root in (self.blob_dir, self.cache_dir):
            for path in root.rglob("*"):
                if path.name.startswith(TEMP_PREFIX) or not path.is_file():
                    continue
                batch.append(path)
                if len(batch) >= _ORPHAN_BATCH:
                    removed += sweep()
                    if time.monotonic() > deadline:
                        log.warning(
                            "orphan file sweep stopped after %.0f s; it continues on the next start", max_seconds
                        )
                        break
            else:
                continue
            break
        if batch:
            removed += sweep()
        if removed:
            log.info("removed %d files of images that have no row (left by a crash)", removed)
        return removed

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
