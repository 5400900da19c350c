"""Streamed multipart/form-data parsing with limits enforced while reading
(see the package docstring): :func:`parse_multipart` and :func:`read_form`."""

from __future__ import annotations

import codecs
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, PayloadTooLarge
from tagrate_common.files import out_of_space

from .. import params
from ..config import GatewaySettings
from ..errors import UnsupportedMediaType
from .files import REQUEST_MEMORY_BYTES, SPOOL_MEMORY_BYTES, UploadedFile, UploadLimits

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks


@dataclass
class MultipartForm:
    """The non-file fields (in order, repeats kept) and the files. Closing
    it (``with form:``) frees the files' spools."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)

    def field(self, name: str) -> str | None:
        """The value of the single-valued field ``name``, or None; 400
        (``repeated_parameter``) when the form has it more than once."""
        return params.single(self.fields, name)

    def close(self) -> None:
        for upload in self.files:
            upload.close()

    def __enter__(self) -> MultipartForm:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def files_named(self, name: str) -> list[UploadedFile]:
        return [f for f in self.files if f.field == name]

    def files_required(self, name: str) -> list[UploadedFile]:
        """Every file uploaded as ``name``, in upload order; 400 when there
        is none (or the field was sent as plain text instead of files)."""
        found = self.files_named(name)
        return found if found else [self.file(name)]

    def file(self, name: str) -> UploadedFile:
        """The one file uploaded as ``name``; 400 when it is missing or was
        sent as a plain text field instead of a file."""
        found = self.files_named(name)
        if found:
            return found[0]
        if self.field(name) is not None:
            raise InvalidArgument(f"'{name}' must be uploaded as a file (a form-data file part)", "not_a_file")
        raise validation.missing(name)


class _PartCollector:
    """python-multipart callbacks that assemble parts and enforce limits.
    Raising from a callback aborts ``parser.write`` mid-chunk."""

    def __init__(self, limits: UploadLimits, charset: str, spool_dir: Path | None = None) -> None:
        self.limits = limits
        self.charset = charset
        self.spool_dir = spool_dir
        self.form = MultipartForm()
        self.finished = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._data = bytearray()
        self._spool: IO[bytes] | None = None
        self._spool_memory = 0  # what the current file may keep in memory
        self._memory_left = REQUEST_MEMORY_BYTES
        self._size = 0
        self._parts = 0

    def close(self) -> None:
        """Frees every spool, the unfinished one too (the parse failed)."""
        self.form.close()
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._disposition, self._name, self._filename = b"", "", None
        self._data = bytearray()
        self._size = 0
        self._parts += 1
        if self._parts > self.limits.max_files + self.limits.max_fields:
            raise PayloadTooLarge(
                f"the form has too many parts (at most {self.limits.max_files} files and "
                f"{self.limits.max_fields} fields)",
                "too_many_fields",
            )

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if bytes(self._header_name).lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidArgument(
                "every form-data part needs a Content-Disposition header with a name", "malformed_multipart"
            )
        try:
            self._name = options[b"name"].decode(self.charset)
        except UnicodeDecodeError:
            raise InvalidArgument("a form field name is not valid text", "malformed_multipart") from None
        if b"filename" in options:
            self._filename = options[b"filename"].decode(self.charset, errors="replace")
            if len(self.form.files) >= self.limits.max_files:
                raise PayloadTooLarge(
                    f"at most {self.limits.max_files} file{'s' if self.limits.max_files != 1 else ''} "
                    "per request; this request has more",
                    "too_many_files",
                )
            # max_size=0 would mean "never roll over"; 1 sends the file to disk at once.
            self._spool_memory = max(1, min(SPOOL_MEMORY_BYTES, self._memory_left))
            # Closed by the form (or by close() when the parse fails), not by a with block.
            self._spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                max_size=self._spool_memory,
                dir=str(self.spool_dir) if self.spool_dir else None,
                prefix="tagrate-upload-",
            )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._spool is not None:
            if self._size > self.limits.max_file_bytes:
                label = f"'{self._filename}'" if self._filename else f"the file in '{self._name}'"
                raise PayloadTooLarge(
                    f"{label} is larger than the {self.limits.max_file_bytes} byte limit per file", "file_too_large"
                )
            self._spool.write(data[start:end])
            return
        if self._size > self.limits.max_field_bytes:
            raise PayloadTooLarge(
                f"the form field '{self._name}' is larger than {self.limits.max_field_bytes} bytes", "field_too_large"
            )
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._spool is not None:
            assert self._filename is not None
            if self._size <= self._spool_memory:  # it stayed in memory
                self._memory_left -= self._size
            self.form.files.append(UploadedFile(self._name, self._filename, self._spool, self._size))
            self._spool = None
            return
        try:
            value = self._data.decode(self.charset)
        except UnicodeDecodeError:
            # Usually a file sent without a file name (an empty or missing
            # filename=): say so rather than blame the encoding alone.
            raise InvalidArgument(
                f"the form field '{self._name[:64]}' is not valid {self.charset} text; a file must be sent as a "
                'file part with a non-empty filename (Content-Disposition: form-data; name="..."; filename="...")',
                "invalid_encoding",
            ) from None
        self.form.fields.append((self._name, value))

    def on_end(self) -> None:
        self.finished = True


def _too_large(limits: UploadLimits, size: str) -> PayloadTooLarge:
    files = f"{limits.max_files} file{'s' if limits.max_files != 1 else ''}"
    return PayloadTooLarge(
        f"the request body ({size}) is larger than this endpoint accepts ({limits.max_body_bytes} bytes: "
        f"at most {files} of at most {limits.max_file_bytes} bytes each, and a whole request of at most "
        f"{limits.max_request_bytes or limits.max_body_bytes} bytes)",
        "request_too_large",
    )


async def parse_multipart(
    content_type: str | None,
    content_length: str | None,
    body: AsyncIterator[bytes],
    limits: UploadLimits,
    spool_dir: Path | None = None,
) -> MultipartForm:
    """Reads a multipart/form-data body from ``body`` within ``limits``,
    spooling files (to ``spool_dir``, default the system's temporary
    directory, beyond their in-memory share); the caller closes the form.

    Raises 415 for another media type, 413 (before reading any of the body)
    when the declared Content-Length exceeds what the limits allow, 413 as
    soon as the bytes read do, a file or field outgrows its limit or there
    are too many files, and 400 for a malformed or cut-off body. Nothing
    stays spooled after a failure."""
    media_type, params = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        got = media_type.decode("latin-1") or "no Content-Type"
        raise UnsupportedMediaType(f"send the form as multipart/form-data (got {got[:80]})")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidArgument("the multipart/form-data Content-Type has no boundary", "malformed_multipart")
    if content_length is not None and content_length.isdigit() and int(content_length) > limits.max_body_bytes:
        raise _too_large(limits, f"{content_length} bytes")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"

    collector = _PartCollector(limits, charset, spool_dir)
    received = 0
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in body:
            received += len(chunk)
            if received > limits.max_body_bytes:  # chunked bodies declare no length
                raise _too_large(limits, f"more than {limits.max_body_bytes} bytes")
            parser.write(chunk)
            if collector.finished:
                break  # an epilogue after the closing boundary is not worth reading
        parser.finalize()
        if not collector.finished:
            raise InvalidArgument(
                "the multipart/form-data body ended before its closing boundary", "malformed_multipart"
            )
    except FormParserError as exc:
        collector.close()
        raise InvalidArgument(f"the multipart/form-data body is malformed: {exc}", "malformed_multipart") from None
    except ClientDisconnect:
        collector.close()
        raise InvalidArgument("the request body was cut off before it ended", "incomplete_body") from None
    except OSError as exc:  # spooling a file to disk (GATEWAY_SPOOL_DIR)
        collector.close()
        full = out_of_space(exc)
        if full is None:
            raise
        raise full from None
    except BaseException:
        collector.close()
        raise
    return collector.form


@asynccontextmanager
async def read_form(request: Request, settings: GatewaySettings, max_files: int) -> AsyncIterator[MultipartForm]:
    """``async with read_form(...) as form``: the request's multipart form,
    read as a stream within the settings' limits; its files' spools are
    freed when the block ends."""
    limits = UploadLimits.from_settings(settings, max_files)
    form = await parse_multipart(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        limits,
        settings.spool_dir,
    )
    with form:
        yield form
