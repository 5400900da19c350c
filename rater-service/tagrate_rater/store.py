"""The heads folder: every subject's head versions on disk, and the live
:class:`~.heads.HeadSet` built from them.

Each subject's heads (a user's, or the global head's under ``all``) live in a
folder named by a hash of the name, so a user name never becomes a path.
Every publish writes a new version file atomically (temp file, fsync,
rename, fsync of the folder), swaps the live set, and then rewrites the
folder's ``GENERATION`` file, naming the file it just wrote. At start the
newest readable version of each subject made for the current extractor is
loaded.

**Several replicas, one folder** (a shared volume): a replica that did not
publish a head learns of it by re-reading ``GENERATION`` every
``heads_reload_seconds``. A few bytes read is all a quiet poll costs;
reading (rather than stat-ing) it also makes an NFS client revalidate the
file, where a stat may be answered from its attribute cache. Only when the
text changed are the subject folders listed, and only subjects whose newest
file name changed are read again. The text names the file last published,
which is read even if a cached folder listing (NFS) does not show it yet. Head files appear under their real name
only once complete, so a reload never sees half a file; a damaged or foreign
file is logged and skipped, and the subject keeps the newest head that reads.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tagrate_common import validation
from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_common.files import TEMP_PREFIX, fsync_dir, write_atomically
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
from .pins import pinned_file, unpin

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


def _remove_stale_temps(folder: Path) -> None:
    cutoff = time.time() - STALE_TEMP_SECONDS
    for temp in folder.glob(f"{TEMP_PREFIX}*"):
        try:
            if temp.stat().st_mtime < cutoff:
                temp.unlink()
        except OSError:  # gone already (renamed into place, or removed by another replica)
            pass


@dataclass
class HeadStore:
    """The heads folder and the live :class:`HeadSet` built from it.

    Construct with :meth:`open`. ``live`` is read without a lock: it is
    replaced, never changed, so one read gives a consistent set."""

    root: Path
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
    def open(cls, root: Path, extractor_id: str, dimensions: int, keep_versions: int = 5) -> HeadStore:
        """Creates the folder if needed and loads, for each subject, the
        newest readable head made for ``extractor_id``."""
        root.mkdir(parents=True, exist_ok=True)
        store = cls(root, extractor_id, dimensions, keep_versions)
        _remove_stale_temps(root)
        with store._lock:
            store._generation = store._read_generation()
            loaded, other_extractor = store._scan(cleanup=True)
            store.live = HeadSet(loaded)
        if other_extractor:
            log.warning(
                "%d head files were made for another feature extractor than %s and are not served; "
                "retrain those users' heads",
                other_extractor,
                extractor_id,
            )
        log.info("loaded %d rating heads from %s", len(store.live), root)
        return store

    def _scan(self, cleanup: bool = False, known: Path | None = None) -> tuple[list[LoadedHead], int]:
        """Reads every subject whose newest file name is not the one last
        seen: the heads to serve for them, and how many files were skipped
        for being another extractor's. ``known`` is a head file that exists
        even if a cached listing does not show it yet. Called with the lock
        held."""
        loaded: list[LoadedHead] = []
        other_extractor = 0
        folders = {p for p in self.root.iterdir() if p.is_dir()}
        if known is not None and known.parent.parent == self.root and known.parent.is_dir():
            folders.add(known.parent)
        for folder in sorted(folders):
            if cleanup:
                _remove_stale_temps(folder)
            files = head_files(folder, known)
            pinned = pinned_file(folder, files)
            key = files[0].name + (f"|{pinned.name}" if pinned is not None else "") if files else ""
            if not files or self._newest.get(folder.name) == key:
                continue
            self._newest[folder.name] = key
            if pinned is not None:  # an older version chosen to serve (history.py): tried first
                files = [pinned, *(path for path in files if path != pinned)]
            for path in files:
                try:
                    head = read_head_file(path, self.dimensions, self.extractor_id)
                except HeadFileError as exc:
                    log.warning("skipping head file %s: %s", path, exc)
                    continue
                if head is None:
                    other_extractor += 1
                    continue
                if subject_key(head.info.user) != folder.name:
                    log.warning("skipping head file %s: it belongs to another folder", path)
                    continue
                loaded.append(head)
                break
        return loaded, other_extractor

    def _read_generation(self) -> bytes | None:
        try:
            return (self.root / GENERATION_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def _named_file(self, generation: bytes | None) -> Path | None:
        """The head file a ``GENERATION`` text names (the last one published),
        if it is well formed."""
        folder, _, name = (generation or b"").decode(errors="replace").strip().partition("/")
        if len(folder) != 32 or not folder.isalnum() or "/" in name or not name.endswith(HEAD_FILE_SUFFIX):
            return None
        return self.root / folder / name

    def reload(self) -> int:
        """Serves heads other processes published into the folder since the
        last look: a no-op unless ``GENERATION`` changed. Returns how many
        subjects' live heads changed."""
        generation = self._read_generation()
        if generation == self._generation:
            return 0
        with self._lock:
            # Read before listing: a publish writes its head file before
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
                    log.exception("reloading the heads from %s failed; retrying in %.1fs", self.root, interval_seconds)

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
        folder = self.root / subject_key(subject)
        with self._lock:
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)  # another replica may make it at the same time
                fsync_dir(self.root)
            # The next number after the newest on disk, which another replica
            # may have written since this one last looked.
            files = head_files(folder)
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
            write_atomically(folder / name, head_file_bytes(info, head))
            unpin(folder)  # a new head serves, whichever version was chosen before
            self._newest[folder.name] = name
            self.live = self.live.with_heads([LoadedHead(info, head)])
            self._prune(folder)
            # Last, so a replica that sees the new text finds the file.
            write_atomically(self.root / GENERATION_FILE, f"{folder.name}/{name}\n".encode())
        log.info("published %s head %s for %s", kind, info.version, subject)
        return info

    def _prune(self, folder: Path) -> None:
        """Deletes a subject's versions beyond the newest ``keep_versions``."""
        for old in head_files(folder)[self.keep_versions :]:
            try:
                old.unlink()
            except FileNotFoundError:  # another replica pruned it first
                pass
            except OSError as exc:  # a stale file costs disk space only
                log.warning("could not delete old head file %s: %s", old, exc)
