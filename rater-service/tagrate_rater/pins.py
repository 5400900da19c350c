"""Which version of a subject's head serves when it is not the newest: a
``SERVING`` file in the subject's folder names the chosen head file
(written atomically; removed by the next publish). Every replica sharing
the folder reads it when it reloads the subject (see ``store.py``)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tagrate_common.files import fsync_dir, write_atomically

PIN_FILE = "SERVING"


def pinned_file(folder: Path, files: list[Path]) -> Path | None:
    """The head file the folder's pin names, when it is one of ``files``."""
    try:
        name = (folder / PIN_FILE).read_text().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return next((path for path in files if path.name == name), None)


def pin(folder: Path, path: Path) -> None:
    write_atomically(folder / PIN_FILE, f"{path.name}\n".encode())


def unpin(folder: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (folder / PIN_FILE).unlink()
        fsync_dir(folder)
