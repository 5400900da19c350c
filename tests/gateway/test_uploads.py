"""Streamed multipart parsing: fields and files come out intact however the
body is chunked, and every limit trips while the body is still arriving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tagrate_common.errors import InvalidArgument, PayloadTooLarge, TagrateError, UnsupportedImage
from tagrate_common.images import ImageLimits
from tagrate_gateway.uploads import MultipartForm, UploadLimits, parse_multipart
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
