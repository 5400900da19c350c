"""End to end over real HTTP: gateway -> gRPC -> dataset service -> SQLite
and PostgreSQL, with real image files."""

from __future__ import annotations

import hashlib
import io
import logging
import re

import httpx
import pytest
from PIL import Image

from tagrate_common.logging import request_id_var
from tests.imagefactory import make_image

from .answers import assert_error
from .stack import add_rating, start_stack, stored_name, tag_image

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


@pytest.fixture
def stack(database_url, tmp_path):
    stack = start_stack(database_url, tmp_path / "data")
    yield stack
    stack.stop()


def names(body: dict) -> list[str]:
    return [item["image"] for item in body["images"]]


def test_rating_flow(stack):
    """The main flow, on SQLite and on PostgreSQL."""
    jpeg, png, gif = make_image("JPEG", seed=1), make_image("PNG", seed=2), make_image("GIF", seed=3)
    jpeg_name, png_name, gif_name = stored_name(jpeg, "jpg"), stored_name(png, "png"), stored_name(gif, "gif")
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.get("/verifydatasets").json() == {
            "valid": True,
            "users": [],
            "untagged_images": 0,
            "work": {
                "tag": {"pending": 0, "failed": 0},
                "embed": {"pending": 0, "failed": 0},
                "hash": {"pending": 0, "failed": 0},
            },
            "failed_work": [],
            "pending_predictions": 0,
        }

        first = add_rating(http, jpeg, "alice", "0.8", "holiday photo.jpg")
        assert first.status_code == 200, first.text
        assert first.json() == {
            "image": jpeg_name,
            "user": "alice",
            "rating": 0.8,
            "new_image": True,
            "new_user": True,
            "near_duplicate_of": None,
        }
        # The same bytes under another client file name are the same image.
        assert add_rating(http, jpeg, "1234567890", "0.3", "other.jpg").json() == {
            "image": jpeg_name,
            "user": "1234567890",
            "rating": 0.3,
            "new_image": False,
            "new_user": True,
            "near_duplicate_of": None,
        }
        assert add_rating(http, png, "alice", "0.2").json()["new_image"] is True
        assert add_rating(http, gif, "1234567890", "1").json()["image"] == gif_name
        updated = add_rating(http, jpeg, "alice", "0.9").json()
        assert updated == {
            "image": jpeg_name,
            "user": "alice",
            "rating": 0.9,
            "new_image": False,
            "new_user": False,
            "near_duplicate_of": None,
        }

        whole = http.get("/getuserdata", params={"user": "alice", "sort": "rating-desc"}).json()
        assert set(whole) == {"user", "images", "total"}
        assert whole["user"] == "alice" and whole["total"] == 2
        assert [(i["image"], i["rating"]) for i in whole["images"]] == [(jpeg_name, 0.9), (png_name, 0.2)]
        assert all(
            TIMESTAMP.fullmatch(i["rated_at"]) and set(i) == {"image", "rating", "rated_at", "predicted"}
            for i in whole["images"]
        )
        assert names(http.get("/getuserdata", params={"user": "alice", "sort": "rating-asc"}).json()) == [
            png_name,
            jpeg_name,
        ]

        unrated = http.get("/getuserdata", params={"user": "alice", "rated": "no"}).json()
        assert unrated == {
            "user": "alice",
            "images": [{"image": gif_name, "rating": None, "rated_at": None, "predicted": None}],
            "total": 1,
        }
        every = http.get("/getuserdata", params={"user": "alice", "rated": "all", "sort": "name-asc"}).json()
        assert names(every) == sorted([jpeg_name, png_name, gif_name]) and every["total"] == 3

        paged = http.get(
            "/getuserdata", params={"user": "alice", "rated": "all", "sort": "name-asc", "page": 2, "limit": 2}
        )
        assert paged.json() == {
            "user": "alice",
            "images": [every["images"][2]],
            "total": 3,
            "page": 2,
            "limit": 2,
            "max_page": 2,
        }

        tag_image(stack, jpeg_name, {"cat": 0.9, "indoor": 0.7, "dog": 0.2})
        assert names(http.get("/getuserdata", params={"user": "alice", "filters": " CAT "}).json()) == [jpeg_name]
        assert names(http.get("/getuserdata", params={"user": "alice", "filters": "-cat"}).json()) == [png_name]

        tags = http.get("/getimagetags", params={"image": jpeg_name}).json()
        assert tags == {
            "image": jpeg_name,
            "tagged": True,
            "model": "test-tagger",
            "tags": ["cat", "indoor"],
            "source": None,
            "original_name": "holiday photo.jpg",  # the name it was first uploaded under
        }

        image = http.get("/getimage", params={"image": jpeg_name})
        assert image.status_code == 200 and image.content == jpeg
        assert image.headers["content-type"] == "image/jpeg"

        datasets = http.get("/verifydatasets").json()
        assert datasets["valid"] is False
        assert [u["user"] for u in datasets["users"]] == ["1234567890", "alice"]
        assert datasets["users"][1]["ratings"] == 2


def test_getimage_etag_304_and_size(shared):
    name, data = shared.names["jpeg"], shared.images["jpeg"]
    with httpx.Client(base_url=shared.url) as http:
        full = http.get("/getimage", params={"image": name})
        assert full.status_code == 200 and full.content == data
        assert full.headers["content-type"] == "image/jpeg"
        assert full.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert full.headers["cache-control"] == "public, max-age=31536000, immutable"

        again = http.get("/getimage", params={"image": name}, headers={"If-None-Match": full.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == full.headers["etag"]
        stale = http.get("/getimage", params={"image": name}, headers={"If-None-Match": '"0000"'})
        assert stale.status_code == 200 and stale.content == data

        small = http.get("/getimage", params={"filename": name, "size": "16"})
        assert small.status_code == 200 and small.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(small.content)).size == (16, 8)
        assert small.headers["etag"] != full.headers["etag"]
        cached = http.get(
            "/getimage", params={"image": name, "size": "16"}, headers={"If-None-Match": small.headers["etag"]}
        )
        assert cached.status_code == 304
        # Never upscaled.
        big = http.get("/getimage", params={"image": name, "size": "4096"})
        assert Image.open(io.BytesIO(big.content)).size == (80, 40)

        png = http.get("/getimage", params={"image": shared.names["png"]})
        assert png.headers["content-type"] == "image/png" and png.content == shared.images["png"]


def test_getimagetags_shapes(shared):
    with httpx.Client(base_url=shared.url) as http:
        plain = http.get("/getimagetags", params={"image": shared.names["jpeg"]}).json()
        assert plain == {
            "image": shared.names["jpeg"],
            "tagged": True,
            "model": "test-tagger",
            "tags": ["cat", "indoor", "sofa"],
            "source": None,
            "original_name": "upload.jpg",  # the seeded upload's file name
        }
        scored = http.get("/getimagetags", params={"filename": shared.names["jpeg"], "scores": "true"}).json()
        assert [t[0] for t in scored["tags"]] == ["cat", "sofa", "indoor"]
        assert [t[1] for t in scored["tags"]] == pytest.approx([0.93, 0.75, 0.61], abs=1e-4)
        untagged = http.get("/getimagetags", params={"image": shared.names["png"], "scores": "1"}).json()
        assert untagged["image"] == shared.names["png"]
        assert untagged["tagged"] is False and untagged["tags"] == []


def test_getuserdata_filters_sorting_paging(shared):
    jpeg, png = shared.names["jpeg"], shared.names["png"]
    with httpx.Client(base_url=shared.url) as http:

        def get(**params):
            response = http.get("/getuserdata", params={"user": "alice", **params})
            assert response.status_code == 200, response.text
            return response.json()

        assert names(get(filters="cat,Indoor")) == [jpeg]
        assert names(get(filters="cat,-sofa")) == []
        assert names(get(filters="-sofa, ,")) == [png]
        assert names(get(filters="nonexistent")) == []
        assert names(get(sort="rating-desc")) == [jpeg, png]
        assert names(get(sort="filename-asc")) == sorted([jpeg, png])
        assert names(get(sort="name-desc")) == sorted([jpeg, png], reverse=True)
        assert names(get(sort="date-asc")) == [jpeg, png]
        assert names(get()) == [png, jpeg]  # date-desc: most recently rated first

        first = get(page="1", limit="1", sort="rating-desc")
        assert first == {"user": "alice", "images": first["images"], "total": 2, "page": 1, "limit": 1, "max_page": 2}
        assert names(first) == [jpeg]
        assert get(page="5", limit="1")["images"] == []
        default_limit = get(page="1")
        assert (default_limit["limit"], default_limit["max_page"], default_limit["total"]) == (60, 1, 2)
        assert get(rated="no", page="1")["images"] == [
            {"image": shared.names["webp"], "rating": None, "rated_at": None, "predicted": None}
        ]


def test_sql_metacharacters_in_filters_are_plain_text(shared):
    with httpx.Client(base_url=shared.url) as http:
        before = shared.state(http, ("alice", "bob"))
        for attack in ("'; DROP TABLE ratings; --", "cat' OR '1'='1", "%", "_", '"', "\\", "cat;--"):
            response = http.get("/getuserdata", params={"user": "alice", "filters": attack})
            assert response.status_code == 200, response.text
            assert response.json()["images"] == []
        assert shared.state(http, ("alice", "bob")) == before


def test_verifydatasets_shape(shared):
    body = httpx.get(f"{shared.url}/verifydatasets").json()
    # The contract's fields, plus the background work queue (extra fields are allowed).
    assert set(body) == {"valid", "users", "untagged_images", "work", "failed_work", "pending_predictions"}
    assert body["pending_predictions"] == 0  # no model exists, so no score is owed
    assert body["valid"] is False and isinstance(body["untagged_images"], int)
    assert [u["user"] for u in body["users"]] == ["alice", "bob"]
    for state in body["users"]:
        assert set(state) == {
            "user",
            "ratings",
            "model_up_to_date",
            "trained_on_ratings",
            "trained_at",
            "last_rating_at",
        }
        assert state["model_up_to_date"] is False
        assert state["trained_on_ratings"] is None and state["trained_at"] is None
        assert TIMESTAMP.fullmatch(state["last_rating_at"])
    assert [u["ratings"] for u in body["users"]] == [2, 1]


def test_request_id_reaches_the_dataset_service(shared):
    seen: list[tuple[str, str]] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((request_id_var.get(), record.getMessage()))

    logger = logging.getLogger("tagrate_common.grpc_server")
    handler, level = Recorder(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)  # a successful RPC is logged at DEBUG (the gateway's line is the INFO one)
    try:
        response = httpx.get(f"{shared.url}/getuserdata", params={"user": "bob"}, headers={"X-Request-ID": "trace-42"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert response.status_code == 200 and response.headers["x-request-id"] == "trace-42"
    assert ("trace-42", "rpc GetUserData OK") in seen


def test_unknown_user_and_image_are_404(shared):
    with httpx.Client(base_url=shared.url) as http:
        before = shared.state(http, ("alice", "bob"))
        body = assert_error(http.get("/getuserdata", params={"user": "nobody"}), 404)
        assert "nobody" in body["error"]
        unknown = "f" * 64 + ".png"
        assert_error(http.get("/getimage", params={"image": unknown}), 404)
        assert_error(http.get("/getimagetags", params={"filename": unknown}), 404)
        assert shared.state(http, ("alice", "bob")) == before
