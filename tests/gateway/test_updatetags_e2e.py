"""/updatetags end to end, and the tag filters on what it stored: real HTTP
to the real gateway, the real dataset service (SQLite) calling the real
tagger (the embedded EfficientNet-Lite0), a real photograph of a cat."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import skimage.data
from PIL import Image

from tagrate_dataset.server import create_server
from tests.imagefactory import make_image
from tests.support import dataset_settings, free_port

from .answers import assert_error
from .conftest import TAGGER_BULK_FILES, GatewayServer, gateway_settings
from .stack import add_rating

CAT_CLASSES = {"tabby_cat", "tiger_cat", "egyptian_mau", "persian_cat", "siamese_cat", "lynx"}


@contextmanager
def tagging_gateway(data_dir: Path, tagger_addr: str) -> Iterator[httpx.Client]:
    """A gateway in front of a dataset service whose tagger is at
    ``tagger_addr``. Its background worker is off, so every tagging the
    tests see is /updatetags' own."""
    settings = dataset_settings(
        data_dir,
        tagger_addr=tagger_addr,
        tagger_timeout_seconds=10,
        background_work=False,
        tag_batch_size=TAGGER_BULK_FILES,
    )
    dataset = create_server(settings)
    addr = f"127.0.0.1:{dataset.start()}"
    try:
        gateway = GatewayServer(gateway_settings(addr, data_dir)).start()
        try:
            with httpx.Client(base_url=gateway.url, timeout=60) as http:
                yield http
        finally:
            gateway.stop()
    finally:
        dataset.stop(0)


@pytest.fixture
def cat_photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skimage.data.chelsea()).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def image_names(http: httpx.Client, **params: str) -> list[str]:
    body = ok(http.get("/getuserdata", params={"user": "alice", "sort": "name-asc", **params}))
    return [item["image"] for item in body["images"]]


def test_updatetags_tags_a_real_photo_and_the_tag_filters_find_it(
    tmp_path: Path, tagger: str, cat_photo: bytes
) -> None:
    with tagging_gateway(tmp_path, tagger) as http:
        cat = ok(add_rating(http, cat_photo, "alice", "0.9", "chelsea.jpg"))["image"]
        other = ok(add_rating(http, make_image("PNG", seed=3), "alice", "0.2", "noise.png"))["image"]
        assert ok(http.get("/getimagetags", params={"image": cat})) == {
            "image": cat,
            "tagged": False,
            "model": None,
            "tags": [],
            "source": None,
            "original_name": "chelsea.jpg",
        }

        first = ok(http.get("/updatetags"))
        assert set(first) == {"updated_images_count", "model"}
        assert first["updated_images_count"] == 2 and first["model"].startswith("efficientnet-lite0")
        assert ok(http.get("/updatetags"))["updated_images_count"] == 0
        assert ok(http.get("/verifydatasets"))["untagged_images"] == 0

        tags = ok(http.get("/getimagetags", params={"image": cat, "scores": "true"}))
        assert tags["tagged"] is True and tags["model"] == first["model"]
        top = tags["tags"][0][0]
        assert top in CAT_CLASSES, tags
        # A real tag name filters the dataset, included or excluded.
        assert image_names(http, filters=top) == [cat]
        assert image_names(http, filters=f" {top.upper()} ") == [cat]
        assert image_names(http, filters=f"-{top}") == [other]
        assert image_names(http, filters=f"{top},-{top}") == []


@pytest.mark.parametrize(
    "send",
    [
        lambda http: http.post("/updatetags", files={"full": (None, "true")}),  # multipart form
        lambda http: http.post("/updatetags", data={"full": "true"}),  # urlencoded form
        lambda http: http.post("/updatetags?full=true"),  # no body: the query string
        lambda http: http.get("/updatetags", params={"full": "1"}),
    ],
    ids=["post-multipart", "post-urlencoded", "post-query", "get"],
)
def test_updatetags_full_retags_everything(
    tmp_path: Path, tagger: str, send: Callable[[httpx.Client], httpx.Response]
) -> None:
    with tagging_gateway(tmp_path, tagger) as http:
        for seed in range(3):
            ok(add_rating(http, make_image("PNG", seed=seed), "alice", "0.5"))
        assert ok(http.post("/updatetags"))["updated_images_count"] == 3
        assert ok(send(http))["updated_images_count"] == 3


def test_updatetags_refuses_a_bad_full_parameter(tmp_path: Path, tagger: str) -> None:
    with tagging_gateway(tmp_path, tagger) as http:
        assert_error(http.get("/updatetags", params={"full": "maybe"}), 400, "invalid_full")
        assert_error(http.post("/updatetags", data={"full": "2"}), 400, "invalid_full")


def test_updatetags_with_the_tagger_unreachable_is_503_naming_it(tmp_path: Path) -> None:
    with tagging_gateway(tmp_path, f"127.0.0.1:{free_port()}") as http:
        ok(add_rating(http, make_image("PNG", seed=1), "alice", "0.5"))
        for response in (http.get("/updatetags"), http.post("/updatetags", data={"full": "true"})):
            body = assert_error(response, 503, "tagger_unavailable")
            assert "tagger" in body["error"]
        (stored,) = ok(http.get("/getuserdata", params={"user": "alice"}))["images"]
        tags = ok(http.get("/getimagetags", params={"image": stored["image"]}))
        assert tags["tagged"] is False  # nothing was written
