"""Durable file writes shared by every service that keeps files (the dataset
service's blobs, the rater's heads, the trainer's published-head copies)."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .errors import InsufficientStorage

# Unfinished writes start with this; a crash can leave them behind, never a
# half-written file under its real name.
TEMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Makes a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Makes ``path`` hold exactly ``data``, all at once or not at all, and
    durably before returning: temp file in the same folder, fsync, rename over
    ``path``, fsync the folder. Concurrent writers of the same content are
    harmless (the last rename wins)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


# The gRPC health-check name a service that stores files reports its disk
# under: NOT_SERVING while it has less than TAGRATE_MIN_FREE_BYTES free (the
# gateway's /readyz asks the dataset service for it).
STORAGE_HEALTH = "tagrate.storage"
# How often that status is brought up to date.
STORAGE_CHECK_SECONDS = 2.0

# errno values meaning "no room": the file system is full, or a quota is.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on ``path``'s file system."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def ensure_free_space(path: Path, needed: int, floor: int) -> None:
    """:class:`InsufficientStorage` (507) when writing ``needed`` bytes under
    ``path`` would leave less than ``floor`` free (``TAGRATE_MIN_FREE_BYTES``):
    checked before anything is written."""
    left = free_bytes(path)
    if left - needed < floor:
        raise InsufficientStorage(
            f"the server's disk is nearly full ({left} bytes free, {floor} kept in reserve); nothing was stored, "
            "try again once space is freed"
        )


def out_of_space(exc: OSError) -> InsufficientStorage | None:
    """The 507 an OSError means when it is a full disk (ENOSPC/EDQUOT), else None."""
    if exc.errno in NO_SPACE_ERRNOS:
        return InsufficientStorage("the server's disk is full; nothing was stored, try again once space is freed")
    return None
