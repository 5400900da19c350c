"""/tag and /tagbulk end to end: real HTTP to the real gateway, real gRPC to
the real tagger running the embedded EfficientNet-Lite0 model, real
photographs (scikit-image's bundled samples) encoded as a client would
upload them."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.imagefactory import bomb_png, make_image, truncated_jpeg
from tests.support import free_port

from .answers import assert_error
from .conftest import TAGGER_BULK_FILES, GatewayServer, start_tagger, tagger_gateway_settings

DEFAULT_THRESHOLD = 0.1  # the embedded model's own threshold
CAT_CLASSES = {"tabby_cat", "tiger_cat", "egyptian_mau", "persian_cat", "siamese_cat", "lynx"}


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Uploads by name: the cat photo as JPEG and PNG, the coffee cup as JPEG."""
    chelsea, coffee = skimage.data.chelsea(), skimage.data.coffee()
    return {
        "chelsea.jpg": encode(chelsea, "JPEG"),
        "chelsea.png": encode(chelsea, "PNG"),
        "coffee.jpg": encode(coffee, "JPEG"),
    }


@pytest.fixture(scope="module")
def http(tag_gateway: GatewayServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tag_gateway.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def single(http: httpx.Client, photos: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """Each photo's /tag answer with the default threshold and no limit."""
    answers = {}
    for name, data in photos.items():
        response = http.post("/tag", files={"image": (name, data)})
        assert response.status_code == 200, response.text
        answers[name] = response.json()
    return answers


def names(tags: list[list[Any]]) -> list[str]:
    return [name for name, _ in tags]


def assert_tag_list(tags: Any, threshold: float) -> None:
    """``[["tag", score], ...]``, scores in [threshold, 1], highest first."""
    assert isinstance(tags, list)
    for pair in tags:
        assert isinstance(pair, list) and len(pair) == 2, pair
        name, score = pair
        assert isinstance(name, str) and name and isinstance(score, float), pair
        assert threshold <= score <= 1.0, pair
    scores = [score for _, score in tags]
    assert scores == sorted(scores, reverse=True)


def assert_same_tags(got: list[list[Any]], expected: list[list[Any]]) -> None:
    """The same tags in the same order; scores equal up to the float noise
    of running an image alone or in a batch."""
    assert names(got) == names(expected)
    assert [s for _, s in got] == pytest.approx([s for _, s in expected], abs=1e-4)


# --- /tag ---------------------------------------------------------------------


def test_tag_photo_answers_model_and_ranked_tags(single, tagger_model):
    for name in ("chelsea.jpg", "chelsea.png"):
        body = single[name]
        assert set(body) == {"model", "tags"}
        assert body["model"] == tagger_model.model_id
        assert_tag_list(body["tags"], DEFAULT_THRESHOLD)
        assert names(body["tags"])[0] in CAT_CLASSES, body
        assert "tabby_cat" in names(body["tags"])[:5], body
    coffee = single["coffee.jpg"]
    assert_tag_list(coffee["tags"], DEFAULT_THRESHOLD)
    assert "espresso" in names(coffee["tags"])[:5], coffee


def test_tag_honours_threshold_and_limit(http, photos, single, tagger_model):
    def tag(**form: str) -> list[list[Any]]:
        response = http.post("/tag", data=form, files={"image": ("cat.jpg", photos["chelsea.jpg"])})
        assert response.status_code == 200, response.text
        return response.json()["tags"]

    default = single["chelsea.jpg"]["tags"]
    low = tag(threshold="0.001")
    assert_tag_list(low, 0.001)
    assert len(low) > len(default)
    assert_same_tags(low[: len(default)], default)  # a lower threshold only adds tags below the others

    every = tag(threshold="0", limit="1000")
    assert len(every) == tagger_model.label_count == 1000 and len({n for n, _ in every}) == len(every)
    assert_same_tags(every[: len(low)], low)

    assert_same_tags(tag(limit="2"), default[:2])
    assert_same_tags(tag(threshold="0.001", limit="5"), low[:5])
    assert tag(threshold="1") == []


# --- /tagbulk -----------------------------------------------------------------


def test_tagbulk_keeps_upload_order(http, photos, single, tagger_model):
    order = ["coffee.jpg", "chelsea.jpg", "chelsea.png", "coffee.jpg"]
    response = http.post("/tagbulk", files=[("images", (name, photos[name])) for name in order])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"model", "tags"} and body["model"] == tagger_model.model_id
    assert len(body["tags"]) == len(order)
    for name, tags in zip(order, body["tags"], strict=True):
        assert_tag_list(tags, DEFAULT_THRESHOLD)
        assert_same_tags(tags, single[name]["tags"])


def test_tagbulk_threshold_and_limit_apply_to_every_image(http, photos):
    files = [("images", (name, photos[name])) for name in ("chelsea.jpg", "coffee.jpg")]
    response = http.post("/tagbulk", data={"threshold": "0", "limit": "3"}, files=files)
    assert response.status_code == 200, response.text
    tags = response.json()["tags"]
    assert [len(t) for t in tags] == [3, 3]
    assert names(tags[0])[0] in CAT_CLASSES and "espresso" in names(tags[1])


# --- bad input ----------------------------------------------------------------

TEXT = ("notes.txt", b"just some text, not an image\n", "text/plain")
EMPTY = ("empty.jpg", b"", "image/jpeg")


def good(seed: int = 1) -> tuple[str, bytes, str]:
    return (f"good{seed}.jpg", make_image("JPEG", seed=seed), "image/jpeg")


@pytest.mark.parametrize(
    ("upload", "status", "code"),
    [
        (TEXT, 415, "unsupported_image"),  # refused by the gateway's header check
        (EMPTY, 415, "empty_file"),  # refused by the gateway's header check
        (("half.jpg", truncated_jpeg(), "image/jpeg"), 415, "truncated_image"),  # the tagger's full decode
        (("bomb.png", bomb_png(), "image/png"), 413, "too_many_pixels"),  # the tagger's pixel limit
    ],
)
def test_bad_file(http, upload, status, code):
    body = assert_error(http.post("/tag", files={"image": upload}), status, code)
    assert f"'{upload[0]}'" in body["error"]
    # In a bulk request the message names the file by position and filename.
    files = [("images", good()), ("images", upload), ("images", good(2))]
    body = assert_error(http.post("/tagbulk", files=files), status, code)
    assert body["error"].startswith(f"file 2 ('{upload[0]}')"), body


def test_no_file(http):
    # Multipart forms without the file: only a text field, or the file under another name.
    # (A (None, value) tuple is a text part; httpx would send data= alone urlencoded.)
    for form in ({"threshold": (None, "0.5")}, {"other": good()}):
        body = assert_error(http.post("/tag", files=form), 400, "missing_parameter")
        assert "'image'" in body["error"]
        body = assert_error(http.post("/tagbulk", files=form), 400, "missing_parameter")
        assert "'images'" in body["error"]
    # The field as plain text instead of a file upload.
    assert_error(http.post("/tag", files={"image": (None, "cat.jpg")}), 400, "not_a_file")
    assert_error(http.post("/tagbulk", files={"images": (None, "cat.jpg")}), 400, "not_a_file")


def test_too_many_files(http):
    files = [("images", good(seed)) for seed in range(TAGGER_BULK_FILES + 1)]
    body = assert_error(http.post("/tagbulk", files=files), 413, "too_many_files")
    assert str(TAGGER_BULK_FILES) in body["error"]
    assert_error(http.post("/tag", files=[("image", good(1)), ("image", good(2))]), 413, "too_many_files")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("threshold", "-0.1"),
        ("threshold", "1.5"),
        ("threshold", "abc"),
        ("threshold", "nan"),
        ("threshold", "inf"),
        ("limit", "0"),
        ("limit", "-1"),
        ("limit", "1001"),
        ("limit", "99999999999999999999"),
        ("limit", "abc"),
        ("limit", "2.5"),
    ],
)
def test_bad_parameter(http, param, value):
    body = assert_error(http.post("/tag", data={param: value}, files={"image": good()}), 400, f"invalid_{param}")
    assert f"'{param}'" in body["error"]
    body = assert_error(
        http.post("/tagbulk", data={param: value}, files=[("images", good()), ("images", good(2))]),
        400,
        f"invalid_{param}",
    )
    assert f"'{param}'" in body["error"]


# --- the tagger unavailable or overloaded -------------------------------------


def test_tagger_down_is_503_naming_it(start_gateway, tmp_path):
    gateway = start_gateway(tagger_gateway_settings(f"127.0.0.1:{free_port()}", tmp_path))
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for response in (
            http.post("/tag", files={"image": good()}),
            http.post("/tagbulk", files=[("images", good()), ("images", good(2))]),
        ):
            body = assert_error(response, 503, "tagger_unavailable")
            assert "tagger" in body["error"]


def test_tagger_not_configured_is_503_naming_it(start_gateway, tmp_path):
    gateway = start_gateway(tagger_gateway_settings("", tmp_path))
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        body = assert_error(http.post("/tag", files={"image": good()}), 503, "tagger_unavailable")
        assert "tagger" in body["error"]


def test_overloaded_tagger_is_503_with_retry_after(tagger_model, start_gateway, tmp_path):
    # A queue of one image whose batch waits long for company: the first
    # image of a bulk request stays queued, so the second finds the queue full.
    server, addr = start_tagger(tagger_model, max_queue_size=1, max_batch_size=2, max_queue_delay_ms=10_000)
    try:
        gateway = start_gateway(tagger_gateway_settings(addr, tmp_path))
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            response = http.post("/tagbulk", files=[("images", good()), ("images", good(2))])
        body = assert_error(response, 503, "overloaded")
        assert "tagger" in body["error"]
        assert response.headers["retry-after"] == "1"
    finally:
        server.stop(1.0)
