"""Durable file writes shared by every service that keeps files (the dataset
service's blobs, the rater's heads, the trainer's published-head copies)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
