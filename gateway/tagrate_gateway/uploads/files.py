"""An uploaded file and the limits a request's files are held to: each
file goes to a spooled temporary file that keeps at most
:data:`SPOOL_MEMORY_BYTES` in memory (and a request at most
:data:`REQUEST_MEMORY_BYTES` over all its files) and moves to disk beyond;
the cheap checks (size and magic bytes) the gateway makes on it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from tagrate_common.images import ImageLimits, check_header, check_size, naming_file
from tagrate_common.protos import common_pb2

from ..config import GatewaySettings

MiB = 1024 * 1024
# Room in a request beyond its files: boundaries, part headers and the
# non-file fields. A Content-Length above files*limit + this is refused unread.
BODY_SLACK_BYTES = 1 * MiB
MAX_FIELDS = 64
# One file part stays in memory up to this size, then moves to disk: most
# photos from a chat client are smaller, and a small file is not worth a
# temporary file. A request keeps at most REQUEST_MEMORY_BYTES of all its
# files in memory; every file after that goes to disk from its first byte,
# so 256 small files cannot add up to 256 MiB of memory.
SPOOL_MEMORY_BYTES = 1 * MiB
REQUEST_MEMORY_BYTES = 8 * MiB
# Enough of a file to recognise its format by its magic bytes.
HEAD_BYTES = 32


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_files: int
    max_field_bytes: int
    max_fields: int = MAX_FIELDS
    max_request_bytes: int | None = None  # the total body limit; None: only files x per-file limit

    @property
    def max_body_bytes(self) -> int:
        """The largest body this endpoint reads: its files at the per-file
        limit plus framing, and never more than the request-body limit."""
        fitting = self.max_files * self.max_file_bytes + BODY_SLACK_BYTES
        return fitting if self.max_request_bytes is None else min(fitting, self.max_request_bytes)

    @classmethod
    def from_settings(cls, settings: GatewaySettings, max_files: int) -> UploadLimits:
        return cls(
            settings.max_upload_bytes,
            max_files,
            settings.max_form_field_bytes,
            max_request_bytes=settings.max_request_bytes,
        )


class UploadedFile:
    """One file part: the form field it came in, the client's file name
    (metadata only, never a path), its size and its bytes, spooled (in
    memory when small, else in an unlinked temporary file) until the form is
    closed."""

    def __init__(self, field: str, filename: str, spool: IO[bytes], size: int) -> None:
        self.field = field
        self.filename = filename
        self.size = size
        self._spool = spool

    def read(self) -> bytes:
        """The whole file (it is read from its spool on every call)."""
        self._spool.seek(0)
        return self._spool.read()

    @property
    def data(self) -> bytes:
        return self.read()

    def head(self) -> bytes:
        self._spool.seek(0)
        return self._spool.read(HEAD_BYTES)

    def image_file(self) -> common_pb2.ImageFile:
        return common_pb2.ImageFile(data=self.read(), filename=self.filename)

    def close(self) -> None:
        self._spool.close()

    def check_image(self, limits: ImageLimits) -> str:
        """Raises 415 for an empty file or one whose magic bytes are not a
        supported image format (413 over the size limit); returns the format."""
        check_size(self.size, self.filename, limits)
        return check_header(self.head(), self.filename, limits)


def check_images(files: Sequence[UploadedFile], limits: ImageLimits) -> None:
    """:meth:`UploadedFile.check_image` for every file of a bulk upload. The
    first bad file fails the request (413/415) with a message that names it
    by position (1-based, upload order) and filename, in the same words the
    model services use: "file 2 ('notes.txt') is not a ... image"."""
    for index, upload in enumerate(files, start=1):
        with naming_file(index, upload.filename):
            upload.check_image(limits)
