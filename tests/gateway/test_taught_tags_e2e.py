"""Taught tags end to end: a real dataset service, rater (the default
model's feature vectors), trainer and gateway. A manual tag on enough
images is learned by the trainer and put on the other images that look
alike (and on none of the others); rejecting a taught tag becomes a
negative example and accepting one a positive of the next learning; the
taught tags go when too few examples are left."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tagrate_common.vision.loaders import load_default_model
from tests.trainer.scenes import scene
from tests.trainer.services import start_services, stored_name

from .stack import add_rating
from .test_training_e2e import TrainingStack


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[TrainingStack]:
    model = load_default_model("cpu")
    data_dir = tmp_path_factory.mktemp("taught-e2e")
    running = TrainingStack(start_services(data_dir, model, scenes=0), [], [], data_dir)
    yield running
    running.stop()


def until(check: Callable[[], object], timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.2)


def taught_on(http: httpx.Client, image: str) -> bool:
    tags = http.get("/getimagetags", params={"image": image, "detail": "true"}).json()["tags"]
    return any(t["tag"] == "circles" and t["source"] == "taught" for t in tags)


def test_a_manual_tag_is_taught_relearned_and_forgotten(stack) -> None:
    circles = [scene(0.85 + 0.01 * i, 9000 + i) for i in range(14)]
    stripes = [scene(0.05 + 0.01 * i, 9100 + i) for i in range(14)]
    with stack.gateway(taught_tag_poll_seconds=0.3, taught_tag_settle_seconds=0.0) as http:
        for png in circles + stripes:
            assert add_rating(http, png, "ann", "0.5", "scene.png").status_code == 200
        stack.services.cache_features(circles + stripes)
        names = [stored_name(png) for png in circles]
        others = [stored_name(png) for png in stripes]
        for name in names[:8]:
            assert http.post("/addtags", data={"image": name, "tag": "circles"}).status_code == 200
        learned = until(lambda: http.get("/taughttags").json())
        assert isinstance(learned, list)
        [info] = learned
        assert info["tag"] == "circles" and info["examples"] == 8 and info["negatives"] == 0
        assert info["images_tagged"] >= 1 and 0.0 <= info["precision_cv"] <= 1.0
        tagged = [name for name in names[8:] if taught_on(http, name)]
        assert tagged, "no look-alike got the taught tag"
        assert not any(taught_on(http, name) for name in others), "a taught tag on an image that is not alike"
        assert not any(taught_on(http, name) for name in names[:8])  # never on its own examples
        # The taught tag is a tag like any other in filters.
        listing = http.get("/getuserdata", params={"user": "ann", "filters": "taught:circles", "sort": "name-asc"})
        assert [i["image"] for i in listing.json()["images"]] == sorted(tagged)
        # ... and in /gettags, counted with its manual images (prefix and contains work).
        for params in ({}, {"prefix": "circ"}, {"contains": "rcle"}):
            listed = http.get("/gettags", params=params).json()
            assert dict(zip(listed["tags"], listed["counts"], strict=True))["circles"] == 8 + len(tagged)

        # Reject one (a negative example), accept another (a positive one).
        rejected, *rest = tagged
        http.post("/removetags", data={"image": rejected, "tag": "circles"})
        assert not taught_on(http, rejected)
        until(lambda: http.get("/taughttags").json()[0]["negatives"] == 1)
        if rest:
            http.post("/addtags", data={"image": rest[0], "tag": "circles"})
            until(lambda: http.get("/taughttags").json()[0]["examples"] == 9)
        assert not taught_on(http, rejected)  # relearning does not bring it back

        # Too few examples left: the taught tag goes.
        for name in [*names[:8], *rest[:1]][:3]:
            http.post("/removetags", data={"image": name, "tag": "circles"})
        until(lambda: http.get("/taughttags").json() == [])
        assert not any(taught_on(http, name) for name in names + others)
