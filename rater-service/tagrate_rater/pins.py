"""Which version of a subject's head serves when it is not the newest: a
``SERVING`` object in the subject's folder names the chosen head file
(written atomically; removed by the next publish). Every replica sharing
the store reads it when it reloads the subject (see ``store.py``)."""

from __future__ import annotations

from tagrate_common.objectstore import ObjectStore

PIN_FILE = "SERVING"


def pinned_file(objects: ObjectStore, folder: str, files: list[str]) -> str | None:
    """The head file name the folder's pin names, when it is one of ``files``."""
    try:
        name = objects.get(f"{folder}/{PIN_FILE}").decode().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return name if name in files else None


def pin(objects: ObjectStore, folder: str, name: str) -> None:
    objects.put(f"{folder}/{PIN_FILE}", f"{name}\n".encode())


def unpin(objects: ObjectStore, folder: str) -> None:
    objects.delete(f"{folder}/{PIN_FILE}")
