import io
import re

import numpy as np
import pytest
import skimage.data
from PIL import Image

from tagrate_common.errors import PayloadTooLarge, UnsupportedImage
from tagrate_common.image_resize import resize_to_fit, resize_upright
from tagrate_common.images import (
    ImageLimits,
    check_header,
    decode_image,
    inspect_image,
    sniff_format,
)
from tests.imagefactory import bomb_png, encode, grey16_png, line_png, make_image, rotated_jpeg, truncated_jpeg

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
    assert not re.search(r"object at 0x|<.*>", exc.value.message), exc.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff" + b"\0" * 64,
        b"GIF89a" + b"\xff" * 64,
        b"RIFF\0\0\0\0WEBP" + b"\0" * 64,
        b"BM" + b"\xff" * 64,
        make_image("PNG")[:60],
    ],
    ids=["jpeg", "gif", "webp", "bmp", "png-cut-short"],
)
def test_error_messages_say_what_is_wrong_in_plain_words(data):
    with pytest.raises(UnsupportedImage) as exc:
        inspect_image(data, "x.img", LIMITS)
    assert not re.search(r"object at 0x|0x[0-9a-f]{6,}|<[^>]*>", exc.value.message), exc.value.message
    assert exc.value.message.startswith("'x.img' ")


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


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


@pytest.mark.parametrize("size", [(50_000, 1), (1, 50_000), (1, 3000), (20_000, 2)])
def test_any_aspect_ratio_is_accepted_and_resized(size):
    data = line_png(*size)
    assert inspect_image(data, "line.png", ImageLimits(1 << 20, 100_000)).width == size[0]
    small = _open(resize_to_fit(data, "PNG", 64)[0])
    assert max(small.size) == 64 and min(small.size) == 1
    assert np.asarray(small.convert("RGB"))[0, 0].tolist() == [200, 120, 40]


def test_a_resize_over_its_budget_is_refused_before_it_starts():
    image = decode_image(line_png(2, 20_000), "l.png", LIMITS)
    with pytest.raises(PayloadTooLarge, match="budget"):
        resize_upright(image, (4000, 4000), budget=1 << 20)  # the output alone is over
    # Thin and tall: shrinking rows first keeps the intermediate at 2 x 448.
    assert resize_upright(image, (1, 448), budget=1000).size == (1, 448)


def test_resized_copies_are_upright_with_the_upright_pixels():
    upright = Image.fromarray(skimage.data.astronaut()).resize((300, 500), Image.Resampling.LANCZOS)
    data = rotated_jpeg(upright, 6)
    stored = _open(data)
    assert stored.size == (500, 300)  # as a phone stores a portrait photo
    small = _open(resize_to_fit(data, "JPEG", 100)[0])
    assert small.size == (60, 100)  # portrait: the limit applies to the upright image
    got = np.asarray(small, np.int16)
    reference = np.asarray(upright.resize((60, 100), Image.Resampling.BICUBIC), np.int16)
    # JPEG twice and a reduced-scale decode: a few grey levels on a detailed
    # photo; any other orientation is off by 80 or more.
    assert np.abs(got - reference).mean() < 8
    for wrong in (reference[::-1], reference[:, ::-1], reference[::-1, ::-1]):
        assert np.abs(got - wrong).mean() > 40
    # Small enough already: still turned upright.
    assert _open(resize_to_fit(data, "JPEG", 1000)[0]).size == (300, 500)


@pytest.mark.parametrize("level", [5_000, 30_000, 60_000])
def test_16_bit_images_keep_their_grey_level_when_resized(level):
    data = grey16_png((200, 120), level)
    assert _open(data).mode == "I;16"
    small, ctype = resize_to_fit(data, "PNG", 64)
    pixels = np.asarray(_open(small).convert("L"), np.float64)
    assert ctype == "image/png" and _open(small).size == (64, 38)
    assert abs(pixels.mean() - level / 257) < 1.5


def test_transparency_survives_a_png_resize_and_palettes_are_resampled():
    rgba = Image.new("RGBA", (200, 100), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 100, 100))
    small = _open(resize_to_fit(encode(rgba), "PNG", 50)[0])
    assert small.mode == "RGBA" and small.getpixel((5, 5)) == (0, 0, 255, 255) and small.getpixel((45, 20))[3] == 0
    palette = Image.fromarray(skimage.data.astronaut()).convert("P", palette=Image.Palette.ADAPTIVE)
    resized = _open(resize_to_fit(encode(palette), "PNG", 128)[0]).convert("RGB")
    reference = palette.convert("RGB").resize((128, 128), Image.Resampling.BICUBIC)
    assert np.abs(np.asarray(resized, np.int16) - np.asarray(reference, np.int16)).max() <= 1


def _damaged_jpegs() -> list[tuple[str, bytes]]:
    """Real photos (baseline, progressive, greyscale, 4:4:4, an odd size) cut
    short and with bytes of their entropy-coded data changed or removed."""
    photo = Image.fromarray(skimage.data.astronaut())
    sources = {
        "baseline": encode(photo, "JPEG", quality=88),
        "progressive": encode(photo, "JPEG", quality=88, progressive=True),
        "grey": encode(photo.convert("L"), "JPEG"),
        "odd-444": encode(photo.resize((333, 217)), "JPEG", subsampling=0),
    }
    rng = np.random.default_rng(15)
    cases = []
    for name, data in sources.items():
        for cut in (len(data) - 1, int(len(data) * 0.9), len(data) // 2, 700):
            cases.append((f"{name}-cut-{cut}", data[:cut]))
        for k in range(12):
            damaged = bytearray(data)
            for at in rng.integers(700, len(data) - 2, int(rng.choice([1, 3, 20]))):
                damaged[at] = int(rng.integers(0, 256))
            cases.append((f"{name}-changed-{k}", bytes(damaged)))
            at = int(rng.integers(700, len(data) - 600))
            cases.append((f"{name}-cut-out-{k}", data[:at] + data[at + int(rng.integers(1, 500)) :]))
    return cases


def _full_decode_outcome(data: bytes) -> str:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return "truncated_image" if "truncated" in str(exc) else "unsupported_image"
    return "ok"


def test_jpeg_validation_at_reduced_scale_refuses_what_a_full_decode_refuses():
    """inspect_image decodes a JPEG at 1/8 scale: the whole entropy-coded
    stream is still read, so every damaged file a full decode refuses is
    refused, with the same code (and the undamaged ones are accepted)."""
    outcomes = {"ok": 0, "truncated_image": 0, "unsupported_image": 0}
    for label, data in _damaged_jpegs():
        expected = _full_decode_outcome(data)
        try:
            inspect_image(data, "d.jpg", LIMITS)
            got = "ok"
        except UnsupportedImage as exc:
            got = exc.code
            assert exc.message.startswith("'d.jpg' is damaged or truncated: "), exc.message
        assert got == expected, label
        outcomes[got] += 1
    # The cases cover every outcome, truncation the most.
    assert outcomes["truncated_image"] >= 16 and outcomes["unsupported_image"] >= 1 and outcomes["ok"] >= 1, outcomes


def test_inspect_reports_the_stored_size_of_a_jpeg_validated_at_reduced_scale():
    photo = Image.fromarray(skimage.data.astronaut()).resize((1001, 603))
    info = inspect_image(encode(photo, "JPEG"), "p.jpg", LIMITS)
    assert (info.width, info.height) == (1001, 603)
    assert inspect_image(make_image("JPEG", (7, 5)), "tiny.jpg", LIMITS).width == 7  # under 8 pixels a side
