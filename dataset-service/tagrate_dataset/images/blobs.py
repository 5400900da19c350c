"""The image blob store: original uploads, content-addressed by sha256, plus
a cache of resized versions, in two object stores
(:mod:`tagrate_common.objectstore`: a folder each, ``DATASET_BLOB_DIR`` and
``DATASET_CACHE_DIR``, or ``blobs/`` and ``cache/`` under
``DATASET_S3_PREFIX`` in an S3 bucket; ``DATASET_BLOB_BACKEND``).

Keys: ``<sha[:2]>/<sha>.<ext>`` for originals, ``<size>/<sha[:2]>/<sha>.<ext>``
for resized versions and ``square-<size>/<sha[:2]>/<sha>.webp`` for
thumbnails. Names are always validated ``<sha256>.<ext>`` strings before they
get here, so no key is ever built from client input.

Every object appears atomically (a file by temp file, fsync and rename; an S3
object by one PUT): a reader sees either nothing or the whole object, and the
service commits an image's row only after ``put`` returned, so no row ever
points at a missing or partial blob. A process killed after the put but
before the commit leaves an object without a row: an orphan, removed as below.

Deleting an image works the other way round: its rows go first (one
transaction), then its files (:meth:`BlobStore.remove`). A crash between the
two leaves files without a row, never served (every read starts from the
row) and removed on the next start by :meth:`BlobStore.collect_orphans`
(objects younger than ``DATASET_STALE_TEMP_SECONDS`` are kept: they may be
an upload in progress on another replica).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from PIL import Image

from tagrate_common.files import ensure_free_space, out_of_space
from tagrate_common.image_resize import resize_to_fit, resize_upright, upright_size
from tagrate_common.images import FORMATS, decode_slot
from tagrate_common.objectstore import FsObjects, ObjectStore, StoredObject

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
    """Original image files and their resized versions: ``originals`` and
    ``cache`` are object stores, or folders (a local disk or a volume)."""

    def __init__(
        self,
        originals: ObjectStore | Path,
        cache: ObjectStore | Path,
        min_free_bytes: int = 0,
        headroom_bytes: int = 0,
    ) -> None:
        self.originals = originals if isinstance(originals, ObjectStore) else FsObjects(originals)
        self.cache = cache if isinstance(cache, ObjectStore) else FsObjects(cache)
        # Uploads are refused when they would leave less than this free...
        self.min_free_bytes = min_free_bytes
        # ...and the disk counts as low (readiness) when the largest upload allowed would be.
        self.headroom_bytes = headroom_bytes
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
        # A delete that removed the original while the thumbnail was being
        # made has missed it: remove it here. (A delete after this check
        # lists the cache after removing the original, so it finds it.)
        if not self.exists(name):
            self.cache.delete(self.thumbnail_key(name, self._warm_size))

    @staticmethod
    def key(name: str) -> str:
        """The original ``<sha256>.<ext>``'s key in ``originals``."""
        return f"{name[:2]}/{name}"

    def put(self, name: str, data: bytes) -> bool:
        """Stores ``data`` under ``name`` durably; returns False when it was
        already stored (the same name always means the same bytes). With
        :meth:`warm_thumbnails`, the image's thumbnail is queued either way
        (one already made is not made again)."""
        key = self.key(name)
        if self.originals.size(key) == len(data):
            stored = False
        else:
            # Refused before a byte is written when the disk is nearly full;
            # a disk that fills up anyway leaves no half-written file (the
            # temporary one is removed) and is a 507 too, never a 500.
            if isinstance(self.originals, FsObjects):
                ensure_free_space(self.originals.root, len(data), self.min_free_bytes)
            try:
                self.originals.put(key, data)
            except OSError as exc:
                full = out_of_space(exc)
                if full is None:
                    raise
                raise full from exc
            log.debug("stored blob %s (%d bytes)", name, len(data))
            stored = True
        if self._warmer is not None and not self.cache.exists(self.thumbnail_key(name, self._warm_size)):
            self._warmer.submit(name)
        return stored

    def exists(self, name: str) -> bool:
        return self.originals.exists(self.key(name))

    def get(self, name: str) -> bytes:
        """The original bytes; FileNotFoundError if missing."""
        return self.originals.get(self.key(name))

    @staticmethod
    def resized_key(name: str, fmt: str, size: int) -> str:
        """The ``cache`` key of the version of ``name`` fitting ``size`` pixels."""
        sha = name.split(".", 1)[0]
        ext = FORMATS[_RESIZED_FORMAT.get(fmt, "PNG")][0]
        return f"{size}/{sha[:2]}/{sha}.{ext}"

    @staticmethod
    def thumbnail_key(name: str, size: int) -> str:
        """The ``cache`` key of the ``size`` px square thumbnail of ``name``."""
        sha = name.split(".", 1)[0]
        return f"{_THUMBNAIL_PREFIX}{size}/{sha[:2]}/{sha}.webp"

    def _cached(self, key: str, lock: threading.Lock, make: Callable[[], bytes], what: str) -> bytes:
        """The ``cache`` object ``key``, made by ``make`` (under ``lock``, so
        once per process however many ask at once) and stored when missing.
        A full disk serves what was made without caching it."""
        try:
            return self.cache.get(key)
        except FileNotFoundError:
            pass
        with lock:
            try:
                return self.cache.get(key)  # made while we waited
            except FileNotFoundError:
                pass
            data = make()
            try:
                self.cache.put(key, data)
            except OSError as exc:
                if out_of_space(exc) is None:
                    raise
                log.warning("disk full: %s served without caching it", what)
                return data
            log.debug("cached %s", what)
            return data

    def resized(self, name: str, fmt: str, size: int) -> tuple[bytes, str]:
        """The original scaled so its longest side is at most ``size`` (never
        upscaled), generated on first use and cached; returns (bytes, content
        type). ``fmt`` is the original's Pillow format name."""
        content_type = resized_content_type(fmt)

        def make() -> bytes:
            return resize_to_fit(self.get(name), fmt, size)[0]

        data = self._cached(self.resized_key(name, fmt, size), self._lock_for(name, size), make, f"{name} at {size}px")
        return data, content_type

    def low_on_space(self) -> bool:
        """Whether the largest upload allowed would be refused now (less than
        the reserve plus one upload free). Never, in an object store."""
        try:
            left = self.originals.free_bytes()
        except OSError:
            return True
        return left is not None and left < max(self.min_free_bytes + self.headroom_bytes, 1)

    def thumbnail(self, name: str, fmt: str, size: int) -> bytes:
        """The square WebP thumbnail of ``name`` (see :func:`square_thumbnail`),
        generated on first use and cached; concurrent first requests in this
        process generate it once (the others wait for it). FileNotFoundError
        when the original is missing."""

        def make() -> bytes:
            return square_thumbnail(self.get(name), fmt, size)

        key = self.thumbnail_key(name, size)
        return self._cached(key, self._lock_for(name, -size), make, f"the {size}px thumbnail of {name}")

    def _originals_of(self, sha: str) -> list[tuple[ObjectStore, str]]:
        return [(self.originals, key) for key in self.originals.keys_under(f"{sha[:2]}/{sha}.")]

    def _cached_of(self, sha: str) -> list[tuple[ObjectStore, str]]:
        found: list[tuple[ObjectStore, str]] = []
        for folder in self.cache.children():
            found += [(self.cache, key) for key in self.cache.keys_under(f"{folder}/{sha[:2]}/{sha}.")]
        return found

    def remove(self, name: str) -> int:
        """Deletes the original and every cached version of ``name`` (whose
        row is already gone); returns how many objects were removed.

        The original goes first and the cache is listed after it: a thumbnail
        the warmer stores meanwhile is then either in that listing or removed
        by the warmer itself, which looks for the original after storing one
        (:meth:`_warm`). Listing both first left one behind when the warmer
        stored it between the listing and the original's deletion."""
        sha = name.split(".", 1)[0]
        removed = 0
        for found in (self._originals_of, self._cached_of):
            for store, key in found(sha):
                store.delete(key)  # one removed meanwhile is no error
                removed += 1
        return removed

    def collect_orphans(
        self, stored: Callable[[Iterable[str]], set[str]], older_than_seconds: float, max_seconds: float
    ) -> int:
        """Deletes objects (originals, cached versions, thumbnails) of images
        that have no row: left by a crash during a delete, or by an upload
        whose row was never committed. ``stored`` says which of some sha256s
        have a row. Objects younger than ``older_than_seconds`` may belong to
        an upload still in progress elsewhere and are kept. Stops after
        ``max_seconds`` (the rest waits for the next start); returns how
        many objects were removed."""
        deadline = time.monotonic() + max_seconds
        cutoff = time.time() - older_than_seconds
        removed = 0
        batch: list[tuple[ObjectStore, StoredObject]] = []

        def sha_of(item: StoredObject) -> str:
            return item.key.rsplit("/", 1)[-1].split(".", 1)[0]

        def sweep() -> int:
            keep = stored({sha_of(item) for _, item in batch})
            doomed = [(store, item) for store, item in batch if sha_of(item) not in keep and item.modified <= cutoff]
            for store, item in doomed:
                store.delete(item.key)
            batch.clear()
            return len(doomed)

        for store in (self.originals, self.cache):
            for item in store.list():
                batch.append((store, item))
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

    def remove_stale_temp_files(self, older_than_seconds: float) -> int:
        """Deletes unfinished writes older than the given age; returns how many.
        Younger ones may still be in progress in another process."""
        removed = self.originals.remove_stale_temps(older_than_seconds)
        removed += self.cache.remove_stale_temps(older_than_seconds)
        if removed:
            log.info("removed %d unfinished blob writes left by a crash", removed)
        return removed
