"""The heads store: every subject's head versions, and the live
:class:`~.heads.HeadSet` built from them. The store is an object store
(:mod:`tagrate_common.objectstore`, ``RATER_HEADS_BACKEND``): the heads
folder (``RATER_HEADS_DIR``), or an S3 bucket under ``RATER_S3_PREFIX``, so
that replicas share heads without a ReadWriteMany volume.

Each subject's heads (a user's, or the global head's under ``all``) live in a
folder (key prefix) named by a hash of the name, so a user name never
becomes a path. Every publish writes a new version object atomically (a
file: temp file, fsync, rename, fsync of the folder; S3: one PUT), swaps the
live set, and then rewrites the store's ``GENERATION`` object, naming the
head it just wrote. At start the newest readable version of each subject
made for the current extractor is loaded.

**Several replicas, one store**: a replica that did not publish a head
learns of it by re-reading ``GENERATION`` every ``heads_reload_seconds``. A
few bytes read is all a quiet poll costs; reading (rather than stat-ing) it
also makes an NFS client revalidate the file, where a stat may be answered
from its attribute cache. Only when the text changed is the store listed
(one listing of every key), and only subjects whose newest head changed are
read again. The text names the head last published, which is read even if a
cached folder listing (NFS) does not show it yet. Heads appear under their
real name only once complete, so a reload never sees half a head; a damaged
or foreign one is logged and skipped, and the subject keeps the newest head
that reads.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tagrate_common import validation
from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_common.objectstore import FsObjects, ObjectStore
from tagrate_common.vision.rating_heads import RatingHead, deserialize_weights

from .headfile import (
    HEAD_FILE_SUFFIX,
    HeadFileError,
    head_file_bytes,
    head_file_name,
    head_files,
    read_head_file,
    sequence_of,
)
from .heads import HeadInfo, HeadSet, LoadedHead
from .pins import PIN_FILE, pinned_file, unpin

log = logging.getLogger(__name__)

MAX_METRICS = 32
MAX_METRIC_NAME = 64
MAX_ID_CHARS = 200  # the dataset service's width for ids and versions

GENERATION_FILE = "GENERATION"
# A temp file this old is a publish that died before its rename. Younger ones
# are left alone: another replica sharing the folder may be writing them now.
STALE_TEMP_SECONDS = 3600.0


def subject_key(subject: str) -> str:
    """The folder name of a subject's heads: a hash, so no user name (valid
    or not, any case) ever becomes part of a path."""
    return hashlib.sha256(subject.encode()).hexdigest()[:32]


def _check_text(value: str, param: str, required: bool) -> str:
    if not value and required:
        raise validation.missing(param)
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(f"'{param}' must be at most {MAX_ID_CHARS} printable characters", "invalid_parameter")
    return value


def _check_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    if len(metrics) > MAX_METRICS:
        raise InvalidArgument(f"'metadata.metrics' may hold at most {MAX_METRICS} figures", "invalid_metrics")
    for name, value in metrics.items():
        if not 1 <= len(name) <= MAX_METRIC_NAME or not name.isprintable():
            raise InvalidArgument(
                f"metric names must be 1-{MAX_METRIC_NAME} printable characters, got {name[:40]!r}", "invalid_metrics"
            )
        if not math.isfinite(value):
            raise InvalidArgument(f"metric '{name}' must be a finite number, got {value!r}", "invalid_metrics")
    return {name: float(metrics[name]) for name in sorted(metrics)}


@dataclass
class HeadStore:
    """The heads store and the live :class:`HeadSet` built from it.

    Construct with :meth:`open`. ``live`` is read without a lock: it is
    replaced, never changed, so one read gives a consistent set."""

    objects: ObjectStore
    extractor_id: str
    dimensions: int
    keep_versions: int = 5
    live: HeadSet = field(default_factory=HeadSet)
    # Per subject folder, the name of the newest head file seen there (read
    # or skipped): a reload reads a subject again only when this changes.
    _newest: dict[str, str] = field(default_factory=dict)
    _generation: bytes | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _reloader: threading.Thread | None = None

    @classmethod
    def open(
        cls, location: Path | ObjectStore, extractor_id: str, dimensions: int, keep_versions: int = 5
    ) -> HeadStore:
        """Opens the store (a folder is created if needed) and loads, for
        each subject, the newest readable head made for ``extractor_id``."""
        objects = location if isinstance(location, ObjectStore) else FsObjects(location)
        store = cls(objects, extractor_id, dimensions, keep_versions)
        # An old temp file is a publish that died before its rename; younger
        # ones may be another replica's publish in progress.
        objects.remove_stale_temps(STALE_TEMP_SECONDS)
        with store._lock:
            store._generation = store._read_generation()
            loaded, other_extractor = store._scan()
            store.live = HeadSet(loaded)
        if other_extractor:
            log.warning(
                "%d head files were made for another feature extractor than %s and are not served; "
                "retrain those users' heads",
                other_extractor,
                extractor_id,
            )
        log.info("loaded %d rating heads from %s", len(store.live), objects.location)
        return store

    def folder_names(self, folder: str) -> list[str]:
        """The names of the objects in a subject's folder."""
        return [item.key.rsplit("/", 1)[1] for item in self.objects.list(f"{folder}/")]

    def read(self, folder: str, name: str) -> LoadedHead | None:
        """The head in a subject folder's head file ``name`` (None: another
        extractor's). HeadFileError when it is gone or cannot be used."""
        key = f"{folder}/{name}"
        try:
            data = self.objects.get(key)
        except FileNotFoundError:
            raise HeadFileError("gone (pruned meanwhile)") from None
        return read_head_file(data, key, self.dimensions, self.extractor_id)

    def _scan(self, known: str | None = None) -> tuple[list[LoadedHead], int]:
        """Reads every subject whose newest head is not the one last seen:
        the heads to serve for them, and how many files were skipped for
        being another extractor's. ``known`` is the key of a head that exists
        even if a cached listing does not show it yet. Called with the lock
        held."""
        loaded: list[LoadedHead] = []
        other_extractor = 0
        by_folder: dict[str, list[str]] = {}
        for item in self.objects.list():
            folder, _, name = item.key.partition("/")
            if name and "/" not in name:
                by_folder.setdefault(folder, []).append(name)
        if known is not None:
            folder, _, name = known.partition("/")
            if name not in by_folder.get(folder, []) and self.objects.exists(known):
                by_folder.setdefault(folder, []).append(name)
        for folder, names in sorted(by_folder.items()):
            files = head_files(names)
            pinned = pinned_file(self.objects, folder, files) if PIN_FILE in names else None
            key = files[0] + (f"|{pinned}" if pinned is not None else "") if files else ""
            if not files or self._newest.get(folder) == key:
                continue
            self._newest[folder] = key
            if pinned is not None:  # an older version chosen to serve (history.py): tried first
                files = [pinned, *(name for name in files if name != pinned)]
            for name in files:
                try:
                    head = self.read(folder, name)
                except HeadFileError as exc:
                    log.warning("skipping head file %s/%s: %s", folder, name, exc)
                    continue
                if head is None:
                    other_extractor += 1
                    continue
                if subject_key(head.info.user) != folder:
                    log.warning("skipping head file %s/%s: it belongs to another folder", folder, name)
                    continue
                loaded.append(head)
                break
        return loaded, other_extractor

    def _read_generation(self) -> bytes | None:
        try:
            return self.objects.get(GENERATION_FILE)
        except FileNotFoundError:
            return None

    def _named_file(self, generation: bytes | None) -> str | None:
        """The key of the head a ``GENERATION`` text names (the last one
        published), if it is well formed."""
        folder, _, name = (generation or b"").decode(errors="replace").strip().partition("/")
        if len(folder) != 32 or not folder.isalnum() or "/" in name or not name.endswith(HEAD_FILE_SUFFIX):
            return None
        return f"{folder}/{name}"

    def mark_changed(self, generation: str) -> None:
        """Rewrites ``GENERATION``, naming ``generation`` (``<folder>/<name>``):
        last, so a replica that sees the new text finds what it names."""
        self.objects.put(GENERATION_FILE, f"{generation}\n".encode())

    def reload(self) -> int:
        """Serves heads other processes published into the store since the
        last look: a no-op unless ``GENERATION`` changed. Returns how many
        subjects' live heads changed."""
        generation = self._read_generation()
        if generation == self._generation:
            return 0
        with self._lock:
            # Read before listing: a publish writes its head before
            # GENERATION, so every publish this text names is in the listing;
            # a later one changes the text again and is seen next time.
            loaded, _ = self._scan(known=self._named_file(generation))
            live = self.live
            changed = [head for head in loaded if (old := live.get(head.info.user)) is None or old.info != head.info]
            if changed:
                self.live = live.with_heads(changed)
            self._generation = generation
        for head in changed:
            log.info("reloaded %s head %s for %s", head.info.kind, head.info.version, head.info.user)
        return len(changed)

    def start_reloading(self, interval_seconds: float) -> None:
        """Calls :meth:`reload` every ``interval_seconds`` on a background
        thread until :meth:`close`. A failed reload is logged and retried at
        the next interval; it never stops the thread."""

        def run() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.reload()
                except Exception:
                    log.exception(
                        "reloading the heads from %s failed; retrying in %.1fs", self.objects.location, interval_seconds
                    )

        self._reloader = threading.Thread(target=run, name="heads-reload", daemon=True)
        self._reloader.start()

    def close(self) -> None:
        """Stops the reload thread, if one runs."""
        self._stop.set()
        if self._reloader is not None:
            self._reloader.join()

    def publish(
        self,
        *,
        user: str,
        kind: str,
        weights: bytes,
        extractor_id: str,
        snapshot_id: str = "",
        metrics: Mapping[str, float] | None = None,
        created_at: datetime | None = None,
    ) -> HeadInfo:
        """Validates a newly trained head, writes it as the subject's next
        version and makes it live. ``user`` ``all`` is the global head.
        Conflict for a head made for another extractor; InvalidArgument for
        anything malformed. Returns the head's metadata with its version."""
        subject = validation.user_name(user, "metadata.user", allow_all=True)
        _check_text(extractor_id, "metadata.extractor_id", required=True)
        if extractor_id != self.extractor_id:
            raise Conflict(
                f"the head was trained on features of extractor '{extractor_id}', but this rater runs "
                f"'{self.extractor_id}'; retrain it on this extractor's features",
                "extractor_mismatch",
            )
        head = RatingHead.from_tensors(kind, deserialize_weights(weights), self.dimensions)
        snapshot_id = _check_text(snapshot_id, "metadata.snapshot_id", required=False)
        checked_metrics = _check_metrics(metrics or {})
        digest = hashlib.sha256(weights).hexdigest()[:8]
        folder = subject_key(subject)
        with self._lock:
            # The next number after the newest stored, which another replica
            # may have written since this one last looked.
            files = head_files(self.folder_names(folder))
            sequence = (sequence_of(files[0]) or 0) + 1 if files else 1
            info = HeadInfo(
                user=subject,
                extractor_id=extractor_id,
                snapshot_id=snapshot_id,
                metrics=checked_metrics,
                created_at=created_at or datetime.now(UTC),
                version=f"v{sequence}-{digest}",
                kind=kind,
            )
            name = head_file_name(sequence, digest)
            self.objects.put(f"{folder}/{name}", head_file_bytes(info, head))
            unpin(self.objects, folder)  # a new head serves, whichever version was chosen before
            self._newest[folder] = name
            self.live = self.live.with_heads([LoadedHead(info, head)])
            self._prune(folder)
            self.mark_changed(f"{folder}/{name}")
        log.info("published %s head %s for %s", kind, info.version, subject)
        return info

    def _prune(self, folder: str) -> None:
        """Deletes a subject's versions beyond the newest ``keep_versions``."""
        for old in head_files(self.folder_names(folder))[self.keep_versions :]:
            try:
                self.objects.delete(f"{folder}/{old}")  # pruned by another replica first: no error
            except OSError as exc:  # a stale file costs space only
                log.warning("could not delete old head file %s/%s: %s", folder, old, exc)
