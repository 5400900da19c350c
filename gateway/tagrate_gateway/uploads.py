"""Streamed multipart/form-data parsing with limits enforced while reading,
and bulk uploads passed on to a model service in bounded chunks.

Starlette's ``request.form()`` spools every file to completion before the
route sees it, so an oversized upload would be read in full before it could
be refused. Here the body is fed chunk by chunk to python-multipart's
low-level parser and the request is refused (413) as soon as a declared
Content-Length or the bytes read pass the request-body limit, one file part
grows past the per-file limit, or a part beyond the files-per-request limit
begins. The gateway checks only what is cheap (size and magic bytes);
decoding is the services' job.

Files never sit whole in memory: each goes to a spooled temporary file that
keeps at most :data:`SPOOL_MEMORY_BYTES` in memory (and a request at most
:data:`REQUEST_MEMORY_BYTES` over all its files) and moves to disk beyond.
:func:`call_in_chunks` then reads a bulk upload back one gRPC call's worth
at a time, so the gateway holds about ``bulk_chunk_bytes`` x
``bulk_calls_in_flight`` of image bytes however large the upload is.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, PayloadTooLarge, TagrateError, Unavailable
from tagrate_common.files import out_of_space
from tagrate_common.images import ImageLimits, check_header, check_size, naming_file
from tagrate_common.protos import common_pb2

from . import params
from .config import GatewaySettings
from .errors import UnsupportedMediaType

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

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


# ---- bulk uploads to a model service, in chunks ----------------------------

T = TypeVar("T")
_FILE_NUMBER_RE = re.compile(r"file (\d+)\b")


@dataclass(frozen=True)
class ChunkPlan:
    """How a bulk upload is split into gRPC calls: at most ``max_bytes`` of
    image bytes (a larger file goes alone) and ``max_files`` files per call,
    at most ``in_flight`` calls at once."""

    max_bytes: int
    max_files: int
    in_flight: int

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> ChunkPlan:
        return cls(settings.bulk_chunk_bytes, settings.bulk_chunk_files, settings.bulk_calls_in_flight)

    def split(self, files: Sequence[UploadedFile]) -> list[tuple[int, list[UploadedFile]]]:
        """Consecutive groups of ``files`` with the 0-based position of each
        group's first file in the whole upload."""
        groups: list[tuple[int, list[UploadedFile]]] = []
        group: list[UploadedFile] = []
        start = size = 0
        for index, upload in enumerate(files):
            if group and (size + upload.size > self.max_bytes or len(group) >= self.max_files):
                groups.append((start, group))
                group, size = [], 0
            if not group:
                start = index
            group.append(upload)
            size += upload.size
        if group:
            groups.append((start, group))
        return groups


def _renumbered(exc: TagrateError, offset: int) -> TagrateError:
    """A service's error about "file N" of one chunk, as "file N+offset" of
    the whole upload (the words of :func:`tagrate_common.images.naming_file`)."""
    match = _FILE_NUMBER_RE.match(exc.message)
    if offset == 0 or match is None:
        return exc
    message = f"file {int(match.group(1)) + offset}" + exc.message[match.end() :]
    return type(exc)(message, exc.code)


async def _read_chunk(group: Sequence[UploadedFile]) -> list[common_pb2.ImageFile]:
    # A spool on disk is a blocking read; the event loop keeps serving meanwhile.
    return await asyncio.to_thread(lambda: [upload.image_file() for upload in group])


async def call_in_chunks(
    files: Sequence[UploadedFile],
    plan: ChunkPlan,
    call: Callable[[list[common_pb2.ImageFile]], Awaitable[T]],
) -> list[T]:
    """``call`` once per chunk of ``files`` (see :meth:`ChunkPlan.split`),
    each chunk read from its spools only when its call starts, at most
    ``plan.in_flight`` at once; the answers in upload order. The first
    failing chunk (in upload order) fails the whole upload, its error
    naming the file by its position in the whole upload; the calls after
    it are cancelled."""
    limit = asyncio.Semaphore(plan.in_flight)

    async def run(start: int, group: list[UploadedFile]) -> T:
        async with limit:
            try:
                # No name keeps the chunk's bytes alive: once ``call`` has built
                # its request from them they are freed, one copy less in flight.
                return await call(await _read_chunk(group))
            except TagrateError as exc:
                raise _renumbered(exc, start) from None

    tasks = [asyncio.ensure_future(run(start, group)) for start, group in plan.split(files)]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def same_model(models: Sequence[str], service: str) -> str:
    """The one model every chunk's answer came from; 503 when the service
    swapped its model between the chunks of one upload (a retry gets one)."""
    if len(set(models)) > 1:
        raise Unavailable(
            f"the {service} service changed its model while this upload was being processed; send it again",
            "model_changed",
        )
    return models[0] if models else ""


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
