import pytest
from PIL import Image

from tagrate_common.errors import PayloadTooLarge, UnsupportedImage
from tagrate_common.images import ImageLimits, check_header, inspect_image, resize_to_fit, sniff_format
from tests.imagefactory import bomb_png, make_image, truncated_jpeg

LIMITS = ImageLimits(max_bytes=1 << 20, max_pixels=4_000_000)


@pytest.mark.parametrize(
    ("fmt", "ext"), [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp")]
)
def test_every_supported_format_is_named_by_content(fmt, ext):
    data = make_image(fmt, (40, 30), seed=3)
    info = inspect_image(data, "whatever.txt", LIMITS)
    assert (info.format, info.ext, info.width, info.height) == (fmt, ext, 40, 30)
    assert info.name == f"{info.sha256}.{ext}" and len(info.sha256) == 64
    assert sniff_format(data[:32]) == fmt


@pytest.mark.parametrize(
    ("data", "error", "code"),
    [
        (b"", UnsupportedImage, "empty_file"),
        (b"just some text, not an image\n", UnsupportedImage, "unsupported_image"),
        (truncated_jpeg(), UnsupportedImage, "truncated_image"),
        (bomb_png(), PayloadTooLarge, "too_many_pixels"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, UnsupportedImage, "unsupported_image"),
    ],
    ids=["empty", "text", "truncated", "bomb", "garbage-after-magic"],
)
def test_bad_uploads_are_refused_with_a_reason(data, error, code):
    with pytest.raises(error) as exc:
        inspect_image(data, "upload.jpg", LIMITS)
    assert exc.value.code == code
    assert "upload.jpg" in exc.value.message


def test_size_limit_is_checked_before_decoding():
    data = make_image("BMP", (600, 600))  # ~1 MiB uncompressed
    with pytest.raises(PayloadTooLarge) as exc:
        check_header(data, "big.bmp", ImageLimits(max_bytes=1000, max_pixels=10**9))
    assert exc.value.code == "file_too_large"


def test_resize_keeps_aspect_and_never_upscales():
    data = make_image("JPEG", (400, 200))
    small, ctype = resize_to_fit(data, "JPEG", 100)
    assert ctype == "image/jpeg"
    assert Image.open(__import__("io").BytesIO(small)).size == (100, 50)
    same, _ = resize_to_fit(data, "JPEG", 1000)
    assert Image.open(__import__("io").BytesIO(same)).size == (400, 200)
    _, ctype = resize_to_fit(make_image("GIF", (64, 64)), "GIF", 32)
    assert ctype == "image/png"
