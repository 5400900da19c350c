"""Streamed multipart/form-data parsing with limits enforced while reading.

Starlette's ``request.form()`` spools every file to completion before the
route sees it, so an oversized upload would be read in full before it could
be refused. Here the body is fed chunk by chunk to python-multipart's
low-level parser and the request is refused (413) as soon as a declared
Content-Length is too large, one file part grows past the per-file limit,
or a part beyond the files-per-request limit begins. The gateway checks
only what is cheap (size and magic bytes); decoding is the services' job.
"""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, PayloadTooLarge
from tagrate_common.images import ImageLimits, check_header, naming_file

from .config import GatewaySettings
from .errors import UnsupportedMediaType

MiB = 1024 * 1024
# Room in a request beyond its files: boundaries, part headers and the
# non-file fields. A Content-Length above files*limit + this is refused unread.
BODY_SLACK_BYTES = 1 * MiB
MAX_FIELDS = 64


@dataclass(frozen=True)
class UploadLimits:
    max_file_bytes: int
    max_files: int
    max_field_bytes: int
    max_fields: int = MAX_FIELDS

    @property
    def max_body_bytes(self) -> int:
        return self.max_files * self.max_file_bytes + BODY_SLACK_BYTES

    @classmethod
    def from_settings(cls, settings: GatewaySettings, max_files: int) -> UploadLimits:
        return cls(settings.max_upload_bytes, max_files, settings.max_form_field_bytes)


@dataclass(frozen=True)
class UploadedFile:
    """One file part: the form field it came in, the client's file name
    (metadata only, never a path) and its bytes."""

    field: str
    filename: str
    data: bytes

    def check_image(self, limits: ImageLimits) -> str:
        """Raises 415 for an empty file or one whose magic bytes are not a
        supported image format (413 over the size limit); returns the format."""
        return check_header(self.data, self.filename, limits)


def check_images(files: Sequence[UploadedFile], limits: ImageLimits) -> None:
    """:meth:`UploadedFile.check_image` for every file of a bulk upload. The
    first bad file fails the request (413/415) with a message that names it
    by position (1-based, upload order) and filename, in the same words the
    model services use: "file 2 ('notes.txt') is not a ... image"."""
    for index, upload in enumerate(files, start=1):
        with naming_file(index, upload.filename):
            upload.check_image(limits)


@dataclass
class MultipartForm:
    """The non-file fields (in order, repeats kept) and the files."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: list[UploadedFile] = field(default_factory=list)

    def field(self, name: str) -> str | None:
        """The first value of a non-file field, or None."""
        return next((value for key, value in self.fields if key == name), None)

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

    def __init__(self, limits: UploadLimits, charset: str) -> None:
        self.limits = limits
        self.charset = charset
        self.form = MultipartForm()
        self.finished = False
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._data = bytearray()
        self._parts = 0

    def callbacks(self) -> dict[str, Any]:
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

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        size = len(self._data) + (end - start)
        if self._filename is not None:
            if size > self.limits.max_file_bytes:
                label = f"'{self._filename}'" if self._filename else f"the file in '{self._name}'"
                raise PayloadTooLarge(
                    f"{label} is larger than the {self.limits.max_file_bytes} byte limit per file", "file_too_large"
                )
        elif size > self.limits.max_field_bytes:
            raise PayloadTooLarge(
                f"the form field '{self._name}' is larger than {self.limits.max_field_bytes} bytes", "field_too_large"
            )
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._filename is not None:
            self.form.files.append(UploadedFile(self._name, self._filename, bytes(self._data)))
            return
        try:
            value = self._data.decode(self.charset)
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"the form field '{self._name}' is not valid {self.charset}", "invalid_encoding"
            ) from None
        self.form.fields.append((self._name, value))

    def on_end(self) -> None:
        self.finished = True


async def parse_multipart(
    content_type: str | None, content_length: str | None, body: AsyncIterator[bytes], limits: UploadLimits
) -> MultipartForm:
    """Reads a multipart/form-data body from ``body`` within ``limits``.

    Raises 415 for another media type, 413 (before reading any of the body)
    when the declared Content-Length exceeds what the limits allow, 413 as
    soon as a file or field outgrows its limit or there are too many files,
    and 400 for a malformed or cut-off body."""
    media_type, params = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        got = media_type.decode("latin-1") or "no Content-Type"
        raise UnsupportedMediaType(f"send the form as multipart/form-data (got {got[:80]})")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidArgument("the multipart/form-data Content-Type has no boundary", "malformed_multipart")
    if content_length is not None and content_length.isdigit() and int(content_length) > limits.max_body_bytes:
        raise PayloadTooLarge(
            f"the request body ({content_length} bytes) is larger than this endpoint accepts "
            f"({limits.max_files} file{'s' if limits.max_files != 1 else ''} of at most "
            f"{limits.max_file_bytes} bytes each)",
            "request_too_large",
        )
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "utf-8"

    collector = _PartCollector(limits, charset)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        async for chunk in body:
            parser.write(chunk)
            if collector.finished:
                break  # an epilogue after the closing boundary is not worth reading
        parser.finalize()
    except FormParserError as exc:
        raise InvalidArgument(f"the multipart/form-data body is malformed: {exc}", "malformed_multipart") from None
    except ClientDisconnect:
        raise InvalidArgument("the request body was cut off before it ended", "incomplete_body") from None
    if not collector.finished:
        raise InvalidArgument("the multipart/form-data body ended before its closing boundary", "malformed_multipart")
    return collector.form


async def read_form(request: Request, settings: GatewaySettings, max_files: int) -> MultipartForm:
    """The request's multipart form, read as a stream within the settings' limits."""
    limits = UploadLimits.from_settings(settings, max_files)
    return await parse_multipart(
        request.headers.get("content-type"), request.headers.get("content-length"), request.stream(), limits
    )


def file_property(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "binary", "description": description}


def files_property(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string", "format": "binary"}, "description": description}


def text_property(description: str, example: str | None = None) -> dict[str, Any]:
    prop: dict[str, Any] = {"type": "string", "description": description}
    if example is not None:
        prop["example"] = example
    return prop


def multipart_body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` documenting a multipart/form-data request body (the
    route reads the body itself, so FastAPI cannot infer it)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": required}}
            },
        }
    }
