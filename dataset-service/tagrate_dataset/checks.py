"""Request values that more than one resource checks the same way."""

from __future__ import annotations

from tagrate_common.errors import InvalidArgument

MAX_FILENAME_CHARS = 255
MAX_ID_CHARS = 200  # model ids, extractor ids, model versions (the columns' width)


def identifier(value: str, param: str) -> str:
    """A model/extractor id: non-empty, at most 200 characters, printable."""
    if not value:
        raise InvalidArgument(f"the '{param}' parameter is required", "missing_parameter")
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidArgument(f"'{param}' must be at most {MAX_ID_CHARS} printable characters", "invalid_parameter")
    return value


def clean_filename(filename: str) -> str:
    """The client's filename as storable metadata: no control characters
    (PostgreSQL text cannot hold NUL), at most 255 characters."""
    return "".join(ch for ch in filename if ch.isprintable())[:MAX_FILENAME_CHARS]
