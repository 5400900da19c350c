"""Collection management end to end: real HTTP to the gateway, real gRPC to
the dataset service, on SQLite and on PostgreSQL, with real image files.
Requests are the original clients' own where they have one (``filename``,
a JSON /updaterating with an integer user id)."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.vision.loaders import load_default_model
from tests.imagefactory import make_image
from tests.trainer.scenes import rated_scenes
from tests.trainer.services import start_services

from .answers import assert_error
from .stack import add_rating, start_stack, stored_name, tag_image
from .test_training_e2e import TrainingStack, rate_through_api, wait_until

USERS = ("alice", "bob", "123456789")


@pytest.fixture
def stack(database_url, tmp_path):
    stack = start_stack(database_url, tmp_path / "data")
    yield stack
    stack.stop()


def rate(http: httpx.Client, data: bytes, user: str, rating: str, ext: str = "jpg") -> str:
    response = add_rating(http, data, user, rating)
    assert response.status_code == 200, response.text
    return stored_name(data, ext)


def up_to_date(http: httpx.Client, user: str) -> bool:
    states = {state["user"]: state for state in http.get("/verifydatasets").json()["users"]}
    return states[user]["model_up_to_date"]


def test_update_remove_and_delete(stack):
    jpeg, png = make_image("JPEG", seed=31), make_image("PNG", seed=32)
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        a = rate(http, jpeg, "alice", "0.7")
        b = rate(http, png, "alice", "0.2", "png")
        rate(http, png, "bob", "0.9", "png")

        # The original's web front end: JSON, `filename`, a string rating.
        changed = http.post("/updaterating", json={"filename": a, "user": "alice", "rating": "0.4"})
        assert changed.status_code == 200, changed.text
        assert changed.json() == {
            "success": True,
            "image": a,
            "user": "alice",
            "rating": 0.4,
            "previous_rating": 0.7,
            "new_user": False,
        }
        # The chat bot: an integer user id, a number; a new user is created.
        created = http.post("/updaterating", json={"image": a, "user": 123456789, "rating": 1})
        assert created.json() == {
            "success": True,
            "image": a,
            "user": "123456789",
            "rating": 1.0,
            "previous_rating": None,
            "new_user": True,
        }
        form = http.post("/updaterating", data={"image": b, "user": "bob", "rating": ".5"})
        assert form.json()["previous_rating"] == 0.9 and form.json()["rating"] == 0.5
        listed = http.get("/getuserdata", params={"user": "alice", "sort": "name-asc"}).json()
        assert {(i["image"], i["rating"]) for i in listed["images"]} == {(a, 0.4), (b, 0.2)}

        # Refusals change nothing.
        before = stack.state(http, USERS)
        unknown = "f" * 64 + ".jpg"
        body = assert_error(http.post("/updaterating", json={"image": unknown, "user": "alice", "rating": 0.5}), 404)
        assert unknown in body["error"]
        assert_error(http.post("/updaterating", json={"image": a, "user": "alice", "rating": 2}), 400)
        assert_error(http.post("/updaterating", json={"image": a, "user": "newcomer"}), 400, "missing_parameter")
        assert_error(http.get("/removerating", params={"user": "nobody", "image": a}), 404)
        body = assert_error(http.get("/removerating", params={"user": "alice", "image": unknown}), 404)
        assert unknown in body["error"]
        body = assert_error(http.get("/removerating", params={"user": "bob", "image": a}), 404)
        assert "bob" in body["error"]
        assert_error(http.get("/deleteimage", params={"image": unknown}), 404)
        assert stack.state(http, USERS) == before

        # Remove (GET with `filename`, as the web front end sends it).
        removed = http.get("/removerating", params={"user": "alice", "filename": b})
        assert removed.json() == {"success": True, "image": b, "user": "alice", "rating": 0.2}
        assert http.get("/getuserdata", params={"user": "alice"}).json()["total"] == 1
        unrated = http.get("/getuserdata", params={"user": "alice", "rated": "no"}).json()
        assert [i["image"] for i in unrated["images"]] == [b]  # the image stays
        assert_error(http.post("/removerating", data={"user": "alice", "image": b}), 404)  # already gone

        # Delete (POST form): every rating goes with it, the file too.
        tag_image(stack, a, {"cat": 0.9})
        assert http.get("/getimage", params={"image": a}).status_code == 200
        assert http.get("/getthumbnail", params={"image": a}).status_code == 200
        deleted = http.post("/deleteimage", data={"image": a})
        assert deleted.json() == {"success": True, "image": a, "ratings_removed": 2}
        for path in ("/getimage", "/getthumbnail", "/getimagetags"):
            assert_error(http.get(path, params={"image": a}), 404)
        assert http.get("/getuserdata", params={"user": "123456789"}).json()["total"] == 0
        assert http.get("/gettags").json()["tags"] == []
        assert not any(a.split(".")[0] in path for path, _ in stack.stored_files())
        assert_error(http.get("/deleteimage", params={"image": a}), 404)


def test_every_rating_change_makes_the_model_stale(stack):
    """A snapshot recorded as trained (what the trainer does) is up to date
    until the user's ratings change by update, removal or deletion; so is
    the global model's, until anyone's do (another user's rating too)."""
    from tagrate_common.grpc_client import Backend
    from tagrate_common.protos import training_data_pb2

    images = [make_image("JPEG", seed=40 + i) for i in range(3)]
    client = Backend("dataset", stack.dataset_addr, DatasetStubs, 10, 64 << 20)

    def train(user: str) -> None:
        # What the trainer records after training on the current snapshot.
        chunks = list(client.stub.training.StreamTrainingData(training_data_pb2.StreamTrainingDataRequest(user=user)))
        snapshot = next(c.snapshot_id for c in chunks if c.snapshot_id)
        client.stub.training.RecordTrainedSnapshot(
            training_data_pb2.RecordTrainedSnapshotRequest(user=user, snapshot_id=snapshot, model_version="v1")
        )

    try:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            names = [rate(http, data, "alice", "0.5") for data in images]
            for change in (
                lambda: http.post("/updaterating", json={"image": names[0], "user": "alice", "rating": 0.9}),
                lambda: http.get("/removerating", params={"user": "alice", "image": names[1]}),
                lambda: http.get("/deleteimage", params={"image": names[2]}),
            ):
                train("alice")
                train("all")
                assert up_to_date(http, "alice")
                stats = http.get("/getstats", params={"user": "alice"}).json()
                assert (stats["RaterNNP_up_to_date"], stats["RaterNN_up_to_date"]) == (True, True)
                response = change()
                assert response.status_code == 200, response.text
                assert not up_to_date(http, "alice")
                stats = http.get("/getstats", params={"user": "alice"}).json()
                assert (stats["RaterNNP_up_to_date"], stats["RaterNN_up_to_date"]) == (False, False)
            # Another user's new rating: alice's own model stays up to date, the global one does not.
            train("alice")
            train("all")
            rate(http, make_image("JPEG", seed=49), "bob", "0.3")
            stats = http.get("/getstats", params={"user": "alice"}).json()
            assert (stats["RaterNNP_up_to_date"], stats["RaterNN_up_to_date"]) == (True, False)
    finally:
        client.close()


def test_addimage(stack):
    one, two, three = (make_image("PNG", seed=50 + i) for i in range(3))
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        rate(http, one, "alice", "0.5", "png")
        added = http.post("/addimage", data={"sankaku_id": "12345"}, files={"image": ("x.png", two)})
        name = stored_name(two, "png")
        answer = added.json()
        # The factory's images share one colour gradient: by hash, a near-duplicate of the first.
        assert answer.pop("near_duplicate_of") in (None, stored_name(one, "png"))
        assert answer == {"success": True, "filename": name, "image": name, "new_image": True}
        assert http.get("/getimagetags", params={"image": name}).json()["source"] == "12345"
        again = http.post("/addimage", files={"image": ("x.png", two)})
        assert again.status_code == 200 and again.json()["new_image"] is False
        bulk = http.post(
            "/addimage",
            data={"source": "https://example.org/post/1"},
            files=[("images", ("a.png", one)), ("images", ("b.png", three)), ("images", ("c.png", two))],
        )
        answer = bulk.json()
        for item in answer["images"]:
            # Only a new image is compared; the factory's images may be near-duplicates by hash.
            near = item.pop("near_duplicate_of")
            assert near is None or (item["new_image"] and near in (stored_name(one, "png"), name))
        assert answer == {
            "success": True,
            "images": [
                {"image": stored_name(one, "png"), "new_image": False},
                {"image": stored_name(three, "png"), "new_image": True},
                {"image": name, "new_image": False},
            ],
        }
        unrated = http.get("/getuserdata", params={"user": "alice", "rated": "no", "sort": "name-asc"}).json()
        assert [i["image"] for i in unrated["images"]] == sorted([name, stored_name(three, "png")])
        assert http.get("/getuserdata", params={"user": "alice"}).json()["total"] == 1  # still one rating

        before = stack.state(http, ("alice",))
        bad = [("images", ("ok.png", make_image("PNG", seed=59))), ("images", ("notes.txt", b"hello"))]
        body = assert_error(http.post("/addimage", files=bad), 415)
        assert "file 2" in body["error"] and "notes.txt" in body["error"]
        assert stack.state(http, ("alice",)) == before


def test_thumbnail(stack):
    wide = make_image("JPEG", (400, 200), seed=60)
    small = make_image("PNG", (40, 90), seed=61)
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        name = rate(http, wide, "alice", "0.5")
        small_name = rate(http, small, "alice", "0.5", "png")
        first = http.get("/getthumbnail", params={"filename": name})
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "image/webp"
        assert first.headers["cache-control"] == "public, max-age=31536000, immutable"
        etag = first.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        with Image.open(io.BytesIO(first.content)) as picture:
            assert picture.format == "WEBP" and picture.size == (200, 200)  # never upscaled to 305
        sized = http.get("/getthumbnail", params={"image": name, "size": "64"})
        with Image.open(io.BytesIO(sized.content)) as picture:
            assert picture.size == (64, 64)
        assert sized.headers["etag"] != etag
        assert http.get("/getthumbnail", params={"image": name}).content == first.content  # cached
        cached = http.get("/getthumbnail", params={"image": name}, headers={"If-None-Match": etag})
        assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == etag
        with Image.open(io.BytesIO(http.get("/getthumbnail", params={"image": small_name}).content)) as picture:
            assert picture.size == (40, 40)
        assert_error(http.get("/getthumbnail", params={"image": "e" * 64 + ".png"}), 404)


def test_tags_and_stats(stack):
    images = [make_image("JPEG", seed=70 + i) for i in range(4)]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        # Ratings chosen at the bucket edges: round(r * 6) half to even.
        names = [rate(http, data, "alice", r) for data, r in zip(images, ("0", ".0833333", "0.25", "1"), strict=True)]
        rate(http, images[0], "bob", "0.5")
        # Code-point order: "_" (0x5f) sorts before "a", whatever a locale's collation says.
        tag_image(stack, names[0], {"cat": 0.9, "cat_ears": 0.8, "dog": 0.7})
        tag_image(stack, names[1], {"cat": 0.95, "catalog": 0.6, "sofa": 0.6})
        tag_image(stack, names[2], {"cat_ears": 0.9, "low": 0.2})  # below the 0.5 threshold
        tags = http.get("/gettags").json()
        assert tags == {
            "model": "test-tagger",
            "tags": ["cat", "cat_ears", "catalog", "dog", "sofa"],
            "counts": [2, 2, 1, 1, 1],
        }
        assert http.get("/gettags", params={"prefix": "CAT"}).json()["tags"] == ["cat", "cat_ears", "catalog"]
        assert http.get("/gettags", params={"contains": "AT"}).json()["tags"] == ["cat", "cat_ears", "catalog"]
        assert http.get("/gettags", params={"contains": "cat ears"}).json()["tags"] == ["cat_ears"]
        assert http.get("/gettags", params={"contains": "o", "prefix": "d"}).json()["tags"] == ["dog"]
        assert_error(http.get("/gettags", params={"contains": "x" * 500}), 400)
        assert http.get("/gettags", params={"prefix": "cat", "limit": "1"}).json() == {
            "model": "test-tagger",
            "tags": ["cat"],
            "counts": [2],
        }
        assert http.get("/gettags", params={"user": "bob"}).json()["tags"] == ["cat", "cat_ears", "dog"]
        assert_error(http.get("/gettags", params={"user": "nobody"}), 404)

        stats = http.get("/getstats", params={"user": "alice"})
        assert stats.status_code == 200, stats.text
        assert stats.json() == {
            "user": "alice",
            "image_count": 4,
            # 0 -> 0; 0.4999998 -> 0; 1.5 -> 2; 6 -> 6
            "rating_distribution": [2, 0, 1, 0, 0, 0, 1],
            "RaterNNP_up_to_date": False,
            "RaterNN_up_to_date": False,
            "trainer": None,  # no trainer configured: null, the rest still answers
            "model": None,
        }
        assert_error(http.get("/getstats", params={"user": "nobody"}), 404)


def test_neighbours_match_the_listing(stack):
    """Each image's neighbours are those of the /getuserdata list for the
    same parameters, across page boundaries, with filters, sorts and rated."""
    images = [make_image("JPEG", seed=80 + i) for i in range(9)]
    ratings = ["0.5", "0.1", "0.9", "0.5", "0.3", "0.7", "0.5", "1", "0"]
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        names = [rate(http, data, "alice", r) for data, r in zip(images[:7], ratings, strict=False)]
        for data in images[7:]:
            assert http.post("/addimage", files={"image": ("x.jpg", data)}).status_code == 200
        for name in names[::2]:
            tag_image(stack, name, {"cat": 0.9, "sofa": 0.8})
        tag_image(stack, names[1], {"cat": 0.9})
        for query in (
            {},
            {"sort": "rating-desc"},
            {"sort": "rating-asc", "rated": "all"},
            {"sort": "name-desc", "rated": "no"},
            {"sort": "date-asc", "filters": "cat"},
            {"sort": "rating-desc", "filters": "cat,sofa"},
            {"sort": "name-asc", "filters": "cat,-sofa", "rated": "all"},
        ):
            listing = http.get("/getuserdata", params={"user": "alice", **query}).json()["images"]
            assert listing, query
            # The same list read page by page (limit 2) is the same list.
            paged = []
            for page in range(1, len(listing) // 2 + 2):
                paged += http.get("/getuserdata", params={"user": "alice", "page": page, "limit": 2, **query}).json()[
                    "images"
                ]
            assert paged == listing
            for index, item in enumerate(listing):
                response = http.get("/getimageneighbours", params={"image": item["image"], "user": "alice", **query})
                assert response.status_code == 200, (query, response.text)
                prev = listing[index - 1] if index > 0 else {"image": None, "rating": None}
                after = listing[index + 1] if index + 1 < len(listing) else {"image": None, "rating": None}
                assert response.json() == {
                    "image": item["image"],
                    "position": index + 1,
                    "max_image": len(listing),
                    "prev_image": {"image": prev["image"], "rating": prev["rating"]},
                    "next_image": {"image": after["image"], "rating": after["rating"]},
                }, query
        # The last image of a list: next_image.image is null (the web viewer stops there).
        last = http.get("/getuserdata", params={"user": "alice", "sort": "name-asc"}).json()["images"][-1]
        end = http.get("/getimageneighbours", params={"filename": last["image"], "user": "alice", "sort": "name-asc"})
        assert end.json()["next_image"] == {"image": None, "rating": None}
        # Not in the list (unrated with rated=yes; filtered out): 404.
        unrated = stored_name(images[7], "jpg")
        assert_error(http.get("/getimageneighbours", params={"image": unrated, "user": "alice"}), 404)
        outside = {"image": names[3], "user": "alice", "filters": "cat"}
        assert_error(http.get("/getimageneighbours", params=outside), 404)
        assert_error(http.get("/getimageneighbours", params={"image": names[0], "user": "nobody"}), 404)


# ---- with a real trainer ----------------------------------------------------


@pytest.fixture(scope="module")
def training(tmp_path_factory) -> Iterator[TrainingStack]:
    """A real trainer, rater (EfficientNet-Lite0) and dataset service on SQLite."""
    model = load_default_model("cpu")
    data_dir = tmp_path_factory.mktemp("collection-training")
    running = TrainingStack(start_services(data_dir, model, scenes=0), [], [], data_dir)
    yield running
    running.stop()


@pytest.mark.slow
def test_stats_show_training_progress_and_the_model_metrics(training) -> None:
    items = [(png, r) for png, _, r in rated_scenes(150, seed=11)]
    # A training that runs until stopped: /getstats while it runs.
    with training.gateway(max_epochs=1_000_000, patience=1_000_000) as http:
        rate_through_api(http, training.services, "dee", items)
        before = http.get("/getstats", params={"user": "dee"}).json()
        assert before["trainer"] is None and before["model"] is None
        assert http.get("/trainuser", params={"user": "dee"}).status_code == 202
        wait_until(http, lambda s: s["state"] == "running" and s["epoch"] >= 1)
        stats = http.get("/getstats", params={"user": "dee"})
        assert stats.status_code == 200, stats.text
        trainer = stats.json()["trainer"]
        assert (trainer["is_training"], trainer["current_user"]) == (True, "dee"), trainer
        # The original's clients print it verbatim: a percentage string.
        assert re.fullmatch(r"\d{1,3}\.\d\d%", trainer["progress"]), trainer
        assert 0.0 < float(trainer["progress"][:-1]) < 100.0
        assert http.post("/stoptraining").status_code == 200
        wait_until(http, lambda s: not s["is_training"])
        assert http.get("/getstats", params={"user": "dee"}).json()["trainer"] is None

    # A training that finishes: the model's held-out metrics, as the trainer reported them.
    with training.gateway() as http:
        assert http.get("/trainuser", params={"user": "dee"}).status_code == 202
        final = wait_until(http, lambda s: not s["is_training"], timeout=120)[-1]
        assert final["state"] == "succeeded", final
        stats = http.get("/getstats", params={"user": "dee"}).json()
        model = stats["model"]
        assert model is not None and model["trained_on_ratings"] == 150, stats
        assert model["metrics"] == pytest.approx(final["metrics"]), (model, final["metrics"])
        assert {"mae", "spearman"} <= set(model["metrics"])
        assert stats["RaterNNP_up_to_date"] is True
