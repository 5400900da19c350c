"""Bulk uploads reach the tagger in several bounded gRPC calls: the answers
come back in upload order, the gateway accepts more files per request than
the tagger takes per call, and a bad file in a later chunk is named by its
position in the whole upload."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tests.imagefactory import truncated_jpeg

from .answers import assert_error
from .conftest import TAGGER_BULK_FILES, TAGGER_UPLOAD_LIMIT, gateway_settings


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photos() -> list[tuple[str, bytes]]:
    return [("chelsea.jpg", jpeg(skimage.data.chelsea())), ("coffee.jpg", jpeg(skimage.data.coffee()))]


@pytest.fixture
def http(tagger: str, start_gateway, tmp_path) -> Iterator[httpx.Client]:
    # Two files per call to a tagger that takes at most TAGGER_BULK_FILES per call,
    # behind a gateway that takes three times that many per request.
    settings = gateway_settings(
        "",
        tmp_path,
        tagger_addr=tagger,
        max_upload_bytes=TAGGER_UPLOAD_LIMIT,
        max_bulk_files=3 * TAGGER_BULK_FILES,
        bulk_chunk_files=2,
        bulk_calls_in_flight=2,
    )
    with httpx.Client(base_url=start_gateway(settings).url, timeout=120) as client:
        yield client


def test_chunked_answers_come_back_in_upload_order(http, photos):
    single = {}
    for name, data in photos:
        answer = http.post("/tag", files={"image": (name, data)}, data={"limit": "5"})
        assert answer.status_code == 200, answer.text
        single[name] = answer.json()["tags"]
    order = [photos[i % 2] for i in (0, 1, 1, 0, 1, 0, 0, 1, 0)]  # 9 files: five calls, the last of one file
    answer = http.post("/tagbulk", files=[("images", item) for item in order], data={"limit": "5"})
    assert answer.status_code == 200, answer.text
    tags = answer.json()["tags"]
    assert len(tags) == len(order) > TAGGER_BULK_FILES
    for (name, _), got in zip(order, tags, strict=True):
        assert [t for t, _ in got] == [t for t, _ in single[name]]
        assert [s for _, s in got] == pytest.approx([s for _, s in single[name]], abs=1e-4)


def test_a_bad_file_in_a_later_chunk_is_named_by_its_place_in_the_upload(http, photos):
    files = [photos[0], photos[1], photos[0], photos[1], photos[0], ("half.jpg", truncated_jpeg()), photos[1]]
    body = assert_error(http.post("/tagbulk", files=[("images", f) for f in files]), 415, "truncated_image")
    assert body["error"].startswith("file 6 ('half.jpg')"), body
