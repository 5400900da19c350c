"""Similar images and near-duplicates end to end (issue 27), on SQLite and
PostgreSQL: real HTTP to the real gateway, the real dataset service with its
background work (hashes, groups), the real rater (EfficientNet-Lite0 on the
CPU) computing the feature vectors, and real photographs with generated
variants (tests/similar/photos.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tagrate_common.grpc_server import GrpcServer
from tagrate_dataset.server import create_server as create_dataset_server
from tagrate_rater.config import RaterSettings
from tagrate_rater.server import create_server as create_rater_server
from tests.gateway.conftest import GatewayServer, gateway_settings
from tests.gateway.predictions_support import wait_for
from tests.gateway.stack import Stack as TagStack
from tests.gateway.stack import tag_image
from tests.support import dataset_settings, free_port
from tests.trainer.scenes import scene

from .photos import PHOTOS, VARIANTS, original, variant

pytestmark = pytest.mark.slow

UPLOAD_LIMIT = 8 << 20
CIRCLES, STRIPES = 6, 6


@dataclass
class Stack:
    dataset: GrpcServer
    dataset_addr: str
    rater: GrpcServer
    gateway: GatewayServer
    http: httpx.Client
    data_dir: Path
    names: dict[str, str] = field(default_factory=dict)  # "photo/variant" or "circle3" -> stored name
    answers: dict[str, dict] = field(default_factory=dict)


def add_image(http: httpx.Client, data: bytes, filename: str) -> dict:
    response = http.post("/addimage", files={"image": (filename, data)})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request, tmp_path_factory, make_pg_database) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp(f"similar-{request.param}")
    url = make_pg_database() if request.param == "postgresql" else None
    dataset_port = free_port()
    dataset_addr = f"127.0.0.1:{dataset_port}"
    rater = create_rater_server(
        RaterSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            device="cpu",
            heads_dir=data_dir / "heads",
            dataset_addr=dataset_addr,
            max_upload_bytes=UPLOAD_LIMIT,
            shutdown_grace_seconds=0.5,
        )
    )
    rater_addr = f"127.0.0.1:{rater.start()}"
    dataset = create_dataset_server(
        dataset_settings(
            data_dir,
            url,
            port=dataset_port,
            rater_addr=rater_addr,
            work_poll_seconds=0.2,
            similar_sync_seconds=0,
            max_upload_bytes=UPLOAD_LIMIT,
            shutdown_grace_seconds=0.5,
        )
    )
    dataset.start()
    gateway = GatewayServer(
        gateway_settings(dataset_addr, data_dir, rater_addr=rater_addr, max_upload_bytes=UPLOAD_LIMIT)
    ).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=120) as http:
            stack = Stack(dataset, dataset_addr, rater, gateway, http, data_dir)
            _seed(stack)
            yield stack
    finally:
        gateway.stop()
        dataset.stop(0)
        rater.stop(0)


def _seed(stack: Stack) -> None:
    """Every photograph, then its variants; then drawn scenes of two kinds
    (red circles, blue stripes), each scene its own picture."""
    for photo in PHOTOS:
        added = add_image(stack.http, original(photo), f"{photo}.jpg")
        stack.names[photo] = added["image"]
    for photo in PHOTOS:
        for kind in VARIANTS:
            added = add_image(stack.http, variant(photo, kind), f"{photo}-{kind}.img")
            stack.names[f"{photo}/{kind}"] = added["image"]
            stack.answers[f"{photo}/{kind}"] = added
    for n in range(CIRCLES):
        stack.names[f"circle{n}"] = add_image(stack.http, scene(1.0, 1000 + n, 160), f"circle{n}.png")["image"]
    for n in range(STRIPES):
        stack.names[f"stripes{n}"] = add_image(stack.http, scene(0.0, 2000 + n, 160), f"stripes{n}.png")["image"]

    def compared() -> dict | None:
        answer = stack.http.get("/getduplicates", params={"limit": 100}).json()
        return answer if answer["pending"] == 0 else None

    wait_for("every image to be compared", compared, timeout=240.0)


def groups_by_name(stack: Stack) -> list[set[str]]:
    answer = stack.http.get("/getduplicates", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    return [{image["image"] for image in group["images"]} for group in answer.json()["groups"]]


def test_every_variant_is_grouped_with_its_original_and_distinct_pictures_never(stack: Stack) -> None:
    groups = groups_by_name(stack)
    group_of = {name: n for n, group in enumerate(groups) for name in group}
    for photo in PHOTOS:
        assert stack.names[photo] in group_of, f"{photo} is in no group"
        for kind in VARIANTS:
            name = stack.names[f"{photo}/{kind}"]
            assert group_of.get(name) == group_of[stack.names[photo]], f"{photo}/{kind} is not grouped with {photo}"
    originals = [stack.names[photo] for photo in PHOTOS]
    assert len({group_of[name] for name in originals}) == len(PHOTOS), "two distinct photographs share a group"
    scenes = {stack.names[key] for key in stack.names if key.startswith(("circle", "stripes"))}
    assert not scenes & set(group_of), "scenes that merely look alike were grouped"
    # Each group shows what the Duplicates screen needs.
    answer = stack.http.get("/getduplicates", params={"limit": 1, "page": 2}).json()
    assert answer["total"] == len(PHOTOS)
    [group] = answer["groups"]
    assert 0 < group["similarity"] <= 1
    assert all(i["width"] > 0 and i["height"] > 0 and i["bytes"] > 0 and i["original_name"] for i in group["images"])


def test_uploads_name_their_near_duplicate(stack: Stack) -> None:
    for photo in PHOTOS:
        same = {stack.names[photo]} | {stack.names[f"{photo}/{kind}"] for kind in VARIANTS}
        for kind in ("exif_stripped", "png"):  # the same pixels: (nearly) the same hash
            assert stack.answers[f"{photo}/{kind}"]["near_duplicate_of"] in same, (photo, kind)
    again = add_image(stack.http, scene(1.0, 99_999, 160), "fresh.png")
    assert again["new_image"] is True
    assert again["near_duplicate_of"] is None


def test_similar_images_of_a_kind_are_mostly_of_that_kind(stack: Stack) -> None:
    for kind, count in (("circle", CIRCLES), ("stripes", STRIPES)):
        query = stack.names[f"{kind}0"]
        response = stack.http.get("/getsimilar", params={"image": query, "limit": count - 1})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["image"] == query
        results = [r["image"] for r in answer["results"]]
        assert query not in results
        same = {stack.names[f"{kind}{n}"] for n in range(count)}
        assert sum(name in same for name in results) >= count - 2, (kind, answer)
        scores = [r["similarity"] for r in answer["results"]]
        assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_the_variants_of_a_photograph_are_its_nearest_images(stack: Stack) -> None:
    response = stack.http.get("/getsimilar", params={"image": stack.names["coffee"], "limit": len(VARIANTS)})
    assert response.status_code == 200, response.text
    assert {r["image"] for r in response.json()["results"]} == {stack.names[f"coffee/{k}"] for k in VARIANTS}


def test_search_by_an_uploaded_example_stores_nothing(stack: Stack) -> None:
    before = stack.http.get("/getduplicates").json()["pending"], len(list((stack.data_dir).rglob("*.jpg")))
    example = variant("rocket", "crop10")[:-2] + b"\xff\xd9"  # other bytes, the same picture
    response = stack.http.post("/getsimilar", files={"image": ("example.jpg", example)}, data={"limit": "3"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["image"] is None
    assert answer["results"][0]["image"] in {stack.names["rocket"], stack.names["rocket/crop10"]}
    after = stack.http.get("/getduplicates").json()["pending"], len(list((stack.data_dir).rglob("*.jpg")))
    assert after == before


def test_filters_rated_and_the_users_ratings_apply(stack: Stack) -> None:
    http = stack.http
    circles = [stack.names[f"circle{n}"] for n in range(CIRCLES)]
    for n, name in enumerate(circles[1:4], 1):
        response = http.post("/updaterating", data={"user": "dora", "image": name, "rating": str(n / 10)})
        assert response.status_code == 200, response.text
    params = {"image": circles[0], "user": "dora", "limit": 50}
    rated = http.get("/getsimilar", params={**params, "rated": "yes"}).json()["results"]
    assert {r["image"]: r["rating"] for r in rated} == {circles[n]: n / 10 for n in (1, 2, 3)}
    unrated = http.get("/getsimilar", params={**params, "rated": "no"}).json()["results"]
    assert not {r["image"] for r in unrated} & set(circles[1:4]) and all(r["rating"] is None for r in unrated)
    tagger = TagStack(stack.dataset, stack.dataset_addr, stack.gateway, stack.data_dir)
    for name in circles[4:]:
        tag_image(tagger, name, {"round": 0.9})
    tagged = http.get("/getsimilar", params={**params, "rated": "all", "filters": "round"}).json()["results"]
    assert {r["image"] for r in tagged} == set(circles[4:])
    untagged = http.get("/getsimilar", params={**params, "rated": "all", "filters": "-round"}).json()["results"]
    assert not {r["image"] for r in untagged} & set(circles[4:])
    answer = http.get("/getsimilar", params={"image": circles[0], "rated": "yes"})
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_rated"


def test_bad_requests_are_refused_by_name(stack: Stack) -> None:
    http = stack.http
    for params, code in (
        ({}, "missing_parameter"),
        ({"image": "nope.jpg"}, "invalid_image_name"),
        ({"image": stack.names["coffee"], "limit": "0"}, "invalid_limit"),
        ({"image": stack.names["coffee"], "limit": "201"}, "invalid_limit"),
    ):
        response = http.get("/getsimilar", params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["code"] == code, (params, response.text)
    unknown = http.get("/getsimilar", params={"image": "0" * 64 + ".jpg"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "image_not_found"
    assert http.get("/getduplicates", params={"limit": "101"}).status_code == 400
    assert http.post("/resolveduplicates", json={"keep": stack.names["coffee"]}).status_code == 400
    response = http.post("/resolveduplicates", json={"not_duplicates": [stack.names["coffee"]]})
    assert response.status_code == 400 and response.json()["code"] == "invalid_not_duplicates"


def test_filters_resolve_manual_tags_aliases_and_comparisons(stack: Stack) -> None:
    """/getsimilar's filters are the library's (``library/filtered.py`` over
    ``tags/filtersql.py``): manual tags, aliases, implications, scoped tags
    and ``rating:`` comparisons."""
    http = stack.http
    circles = [stack.names[f"circle{n}"] for n in range(CIRCLES)]
    for name in circles[1:3]:
        assert http.post("/addtags", data={"image": name, "tag": "hoop"}).status_code == 200
    assert http.post("/tagimplications", json={"tag": "hoop", "implies": "shape"}).status_code == 200
    assert http.post("/tagaliases", json={"alias": "ringlet", "tag": "hoop"}).status_code == 200
    for n, name in enumerate(circles[1:4], 1):
        response = http.post("/updaterating", data={"user": "ezra", "image": name, "rating": str(n / 10)})
        assert response.status_code == 200, response.text
    params = {"image": circles[0], "user": "ezra", "limit": 50, "rated": "all"}

    def found(filters: str) -> set[str]:
        response = http.get("/getsimilar", params={**params, "filters": filters})
        assert response.status_code == 200, response.text
        return {r["image"] for r in response.json()["results"]}

    assert found("manual:hoop") == found("ringlet") == found("shape") == set(circles[1:3])
    assert not found("-hoop") & set(circles[1:3])
    assert found("rating:>=0.2") == set(circles[2:4])
    answer = http.get("/getsimilar", params={**params, "filters": "rating:>x"})
    assert answer.status_code == 400 and answer.json()["code"] == "invalid_filter"
