"""Request values that more than one resource checks the same way."""

from __future__ import annotations

import re

from tagrate_common.errors import InvalidArgument

MAX_FILENAME_CHARS = 255
_MAX_EXTENSION_CHARS = 16
_PATH_SEPARATORS = re.compile(r"[/\\]")
MAX_ID_CHARS = 200  # model ids, extractor ids, model versions (the columns' width)


def identifier(value: str, param: str) -> str:
    """A model/extractor id: non-empty, at most 200 characters, printable."""
    if not value:
        raise InvalidArgument(f"the '{param}' parameter is required", "missing_parameter")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(f"'{param}' must be at most {MAX_ID_CHARS} printable characters", "invalid_parameter")
    return value


def clean_filename(filename: str) -> str:
    """The client's file name as an image's original name: its last path
    part (browsers and clients may send ``C:\\photos\\cat.jpg`` or
    ``../cat.jpg``), other whitespace as spaces, no control or format
    characters (PostgreSQL text cannot hold NUL), blanks trimmed, at most 255
    characters (a long name keeps its extension). "" is no name: none sent,
    or nothing left of it (``.``, ``..``, a folder)."""
    text = "".join(ch if ch.isprintable() else " " if ch.isspace() else "" for ch in filename)
    base = _PATH_SEPARATORS.split(text)[-1].strip()
    if base in (".", ".."):
        return ""
    if len(base) <= MAX_FILENAME_CHARS:
        return base
    stem, dot, extension = base.rpartition(".")
    if dot and stem and 0 < len(extension) <= _MAX_EXTENSION_CHARS:
        return stem[: MAX_FILENAME_CHARS - len(extension) - 1].rstrip() + "." + extension
    return base[:MAX_FILENAME_CHARS].rstrip()
