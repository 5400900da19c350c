"""One head in the store: an object (a file) named ``<sequence:08d>-<digest>.head`` holding
``torch.save`` of the file format number, the head's metadata as JSON text
and its tensors (plain types only, so it loads with ``weights_only=True``).
The rater alone reads and writes these; what the trainer sends is the
weights format of :mod:`tagrate_common.vision.rating_heads`."""

from __future__ import annotations

import io
from collections.abc import Iterable

import torch

from tagrate_common.errors import InvalidArgument
from tagrate_common.vision.rating_heads import RatingHead, float_arrays, load_tensors

from .heads import HeadInfo, LoadedHead

HEAD_FILE_SUFFIX = ".head"
FILE_FORMAT = 1


class HeadFileError(ValueError):
    """A head file on disk cannot be used; the message says why."""


def head_file_name(sequence: int, digest: str) -> str:
    return f"{sequence:08d}-{digest}{HEAD_FILE_SUFFIX}"


def sequence_of(name: str) -> int | None:
    """The sequence number a head file's name starts with; None for a name
    that is not a head file's."""
    if not name.endswith(HEAD_FILE_SUFFIX):
        return None
    prefix = name.split("-", 1)[0]
    return int(prefix) if prefix.isdigit() else None


def head_files(names: Iterable[str]) -> list[str]:
    """The head file names among a subject folder's ``names``, newest first:
    by sequence number, then by name, so that every replica sharing the
    store agrees on the newest even if two of them published the same
    sequence number at once."""
    files = [(sequence, name) for name in set(names) if (sequence := sequence_of(name)) is not None]
    return [name for _, name in sorted(files, reverse=True)]


def head_file_bytes(info: HeadInfo, head: RatingHead) -> bytes:
    """The contents of ``head``'s file."""
    buffer = io.BytesIO()
    torch.save(
        {
            "format": FILE_FORMAT,
            "metadata": info.to_json(),
            "tensors": {name: torch.from_numpy(array) for name, array in head.tensors.items()},
        },
        buffer,
    )
    return buffer.getvalue()


def read_head_file(data: bytes, where: str, dimensions: int, extractor_id: str) -> LoadedHead | None:
    """The head in a head file's bytes (read from ``where``), or None when it
    was made for another extractor. HeadFileError when the file is
    unreadable (truncated, garbage) or inconsistent."""
    try:
        raw = load_tensors(io.BytesIO(data), where)
        if not isinstance(raw, dict) or raw.get("format") != FILE_FORMAT:
            raise HeadFileError(f"not a format {FILE_FORMAT} head file")
        info = HeadInfo.from_json(raw["metadata"])
        if info.extractor_id != extractor_id:
            return None
        head = RatingHead.from_tensors(info.kind, float_arrays(raw["tensors"], "the file"), dimensions)
    except HeadFileError:
        raise
    except InvalidArgument as exc:
        raise HeadFileError(exc.message) from None
    except (KeyError, TypeError, ValueError) as exc:
        raise HeadFileError(f"malformed metadata: {exc}") from None
    return LoadedHead(info, head)
