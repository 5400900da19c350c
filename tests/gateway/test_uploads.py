"""Streamed multipart parsing: fields and files come out intact however the
body is chunked, and every limit trips while the body is still arriving."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import pytest

from tagrate_common.errors import InvalidArgument, PayloadTooLarge, TagrateError, UnsupportedImage
from tagrate_common.images import ImageLimits
from tagrate_gateway.uploads.files import UploadLimits
from tagrate_gateway.uploads.multipart import MultipartForm, parse_multipart
from tests.imagefactory import make_image

BOUNDARY = "testboundary1234"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = UploadLimits(max_file_bytes=10_000, max_files=2, max_field_bytes=100)


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    headers = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
    if filename is not None:
        headers += "Content-Type: application/octet-stream\r\n"
    return headers.encode() + b"\r\n" + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


class Feed:
    """An async body that records how much of it the parser pulled."""

    def __init__(self, data: bytes, chunk: int) -> None:
        self.chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.chunks:
            self.pulled += 1
            yield piece


def parse(
    data: bytes,
    chunk: int = 7,
    limits: UploadLimits = LIMITS,
    content_type: str | None = CONTENT_TYPE,
    content_length: str | None = None,
) -> MultipartForm:
    return asyncio.run(parse_multipart(content_type, content_length, Feed(data, chunk).__aiter__(), limits))


def fails(expected: type[TagrateError], data: bytes, **kw) -> TagrateError:
    with pytest.raises(expected) as info:
        parse(data, **kw)
    return info.value


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_fields_and_files_survive_any_chunking(chunk):
    image = make_image("PNG", seed=3)
    form = parse(body(part("user", b"alice"), part("rating", b"0.5"), part("image", image, "cat.png")), chunk)
    assert form.fields == [("user", "alice"), ("rating", "0.5")]
    assert form.field("user") == "alice" and form.field("missing") is None
    assert len(form.files) == 1
    upload = form.file("image")
    assert (upload.field, upload.filename, upload.data) == ("image", "cat.png", image)
    assert upload.check_image(ImageLimits(10_000, 10_000)) == "PNG"


def test_file_over_the_limit_stops_reading_early():
    data = body(part("image", b"\xff\xd8\xff" + b"x" * 50_000, "big.jpg"))
    feed = Feed(data, 1000)

    async def run() -> None:
        await parse_multipart(CONTENT_TYPE, None, feed.__aiter__(), LIMITS)

    with pytest.raises(PayloadTooLarge) as info:
        asyncio.run(run())
    assert info.value.http_status == 413 and info.value.code == "file_too_large"
    assert "'big.jpg'" in info.value.message and "10000 byte" in info.value.message
    assert feed.pulled < len(feed.chunks) // 2  # refused long before the end of the body


def test_file_exactly_at_the_limit_is_accepted():
    form = parse(body(part("image", b"y" * 10_000, "edge.jpg")), chunk=999)
    assert len(form.file("image").data) == 10_000


def test_too_many_files():
    error = fails(PayloadTooLarge, body(*(part("images", b"abc", f"{i}.jpg") for i in range(3))))
    assert error.code == "too_many_files" and "at most 2 files" in error.message


def test_oversized_field_and_too_many_fields():
    assert fails(PayloadTooLarge, body(part("user", b"u" * 101))).code == "field_too_large"
    assert fails(PayloadTooLarge, body(*(part(f"f{i}", b"v") for i in range(LIMITS.max_fields + 3)))).http_status == 413


def test_declared_content_length_over_the_limit_is_refused_unread():
    error = fails(PayloadTooLarge, b"", content_length=str(LIMITS.max_body_bytes + 1))
    assert error.code == "request_too_large"
    assert parse(body(part("user", b"bob")), content_length=str(LIMITS.max_body_bytes)).field("user") == "bob"


def test_not_multipart():
    error = fails(UnsupportedImage, b"user=bob", content_type="application/x-www-form-urlencoded")
    assert error.http_status == 415 and "multipart/form-data" in error.message
    assert fails(UnsupportedImage, b"{}", content_type=None).http_status == 415
    assert fails(InvalidArgument, b"", content_type="multipart/form-data").code == "malformed_multipart"


def test_malformed_or_cut_off_bodies():
    full = body(part("user", b"alice"))
    assert fails(InvalidArgument, full[:-10]).code == "malformed_multipart"
    assert fails(InvalidArgument, b"").code == "malformed_multipart"
    assert fails(InvalidArgument, b"garbage without boundaries").code == "malformed_multipart"
    nameless = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    assert fails(InvalidArgument, nameless).code == "malformed_multipart"
    assert fails(InvalidArgument, body(part("user", b"\xff\xfe"))).code == "invalid_encoding"


def test_file_sent_as_text_field_or_missing():
    form = parse(body(part("image", b"not a file")))
    with pytest.raises(InvalidArgument) as info:
        form.file("image")
    assert info.value.code == "not_a_file"
    with pytest.raises(InvalidArgument) as info:
        parse(body(part("user", b"x"))).file("image")
    assert info.value.code == "missing_parameter" and "'image'" in info.value.message


def test_empty_and_non_image_files_fail_the_header_check():
    limits = ImageLimits(10_000, 10_000)
    empty = parse(body(part("image", b"", "empty.jpg"))).file("image")
    with pytest.raises(UnsupportedImage) as info:
        empty.check_image(limits)
    assert info.value.code == "empty_file" and "'empty.jpg'" in info.value.message
    text = parse(body(part("image", b"hello, I am text", "notes.txt"))).file("image")
    with pytest.raises(UnsupportedImage) as info:
        text.check_image(limits)
    assert "'notes.txt'" in info.value.message


def test_bytes_read_over_the_request_limit_stop_a_chunked_body():
    limits = UploadLimits(max_file_bytes=10_000, max_files=20, max_field_bytes=100, max_request_bytes=25_000)
    assert limits.max_body_bytes == 25_000
    data = body(*(part("images", b"\xff\xd8\xff" + b"x" * 9_000, f"{i}.jpg") for i in range(10)))
    feed = Feed(data, 1000)

    async def run() -> None:
        await parse_multipart(CONTENT_TYPE, None, feed.__aiter__(), limits)

    with pytest.raises(PayloadTooLarge) as info:
        asyncio.run(run())
    assert info.value.code == "request_too_large" and "25000 bytes" in info.value.message
    assert feed.pulled <= 26  # stopped at the limit, not at the end of the 90 kB body
    assert fails(PayloadTooLarge, b"", limits=limits, content_length="25001").code == "request_too_large"


def test_files_are_spooled_to_disk_beyond_the_memory_share(tmp_path):
    from tagrate_gateway.uploads import files as uploads

    big = b"\xff\xd8\xff" + bytes(range(256)) * (uploads.SPOOL_MEMORY_BYTES // 256 + 10)
    small = make_image("PNG", seed=4)
    limits = UploadLimits(max_file_bytes=len(big), max_files=3, max_field_bytes=100)
    data = body(part("images", small, "small.png"), part("images", big, "big.jpg"), part("images", small, "again.png"))

    async def run() -> MultipartForm:
        return await parse_multipart(CONTENT_TYPE, None, Feed(data, 65536).__aiter__(), limits, tmp_path)

    with asyncio.run(run()) as form:
        small_file, big_file, again = form.files
        assert [f.size for f in form.files] == [len(small), len(big), len(small)]
        assert small_file.read() == small and big_file.read() == big and again.read() == small
        assert big_file._spool._rolled and not small_file._spool._rolled
        assert small_file.check_image(ImageLimits(len(big), 10_000)) == "PNG"
    assert all(f._spool.closed for f in form.files)


def test_a_failed_parse_leaves_nothing_spooled(tmp_path):
    big = b"\xff\xd8\xff" + b"z" * 3_000_000
    limits = UploadLimits(max_file_bytes=len(big), max_files=1, max_field_bytes=100)
    data = body(part("images", big, "big.jpg"))[:-100]  # cut off before the closing boundary
    with pytest.raises(InvalidArgument):
        asyncio.run(parse_multipart(CONTENT_TYPE, None, Feed(data, 65536).__aiter__(), limits, tmp_path))
    assert list(tmp_path.iterdir()) == []  # spools are unlinked at once; their space is freed on close


def test_chunk_plan_splits_by_bytes_and_files():
    from tagrate_gateway.uploads.chunks import ChunkPlan
    from tagrate_gateway.uploads.files import UploadedFile

    def files(*sizes: int) -> list[UploadedFile]:
        return [UploadedFile("images", f"{i}.jpg", io.BytesIO(b"x" * s), s) for i, s in enumerate(sizes)]

    def starts_and_sizes(plan: ChunkPlan, uploads: list[UploadedFile]) -> list[tuple[int, list[int]]]:
        return [(start, [u.size for u in group]) for start, group in plan.split(uploads)]

    plan = ChunkPlan(max_bytes=100, max_files=3, in_flight=2)
    assert starts_and_sizes(plan, files(10, 20, 30, 40, 50)) == [(0, [10, 20, 30]), (3, [40, 50])]
    assert starts_and_sizes(plan, files(60, 50, 150, 10)) == [(0, [60]), (1, [50]), (2, [150]), (3, [10])]
    assert starts_and_sizes(plan, files(100, 1)) == [(0, [100]), (1, [1])]
    assert starts_and_sizes(plan, []) == []
