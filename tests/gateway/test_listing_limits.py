"""The listing limits have one home, the dataset service's settings: raising
DATASET_MAX_FILTER_TAGS or DATASET_USERDATA_MAX_LIMIT (or changing the
default page size) takes effect through the gateway, which neither caps
them nor repeats them. The bodies the gateway serialises without
validation (/getuserdata) match their declared models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tagrate_dataset.server import create_server
from tagrate_gateway.schemas.library import UserData
from tests.imagefactory import make_image
from tests.support import dataset_settings

from .answers import assert_error
from .conftest import GatewayServer, gateway_settings
from .stack import Stack, add_rating, stored_name, tag_image

TAGS = [f"tag{i:02d}" for i in range(81)]


@pytest.fixture(scope="module")
def raised(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A dataset service started with DATASET_* limits from the environment
    (as an operator sets them), a gateway in front of it, and one image of
    alice's tagged with 81 tags."""
    data_dir: Path = tmp_path_factory.mktemp("limits")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DATASET_MAX_FILTER_TAGS", "80")
        env.setenv("DATASET_USERDATA_MAX_LIMIT", "1500")
        env.setenv("DATASET_USERDATA_DEFAULT_LIMIT", "7")
        settings = dataset_settings(data_dir)
    assert (settings.max_filter_tags, settings.userdata_max_limit) == (80, 1500)
    dataset = create_server(settings)
    addr = f"127.0.0.1:{dataset.start()}"
    try:
        gateway = GatewayServer(gateway_settings(addr, data_dir)).start()
    except BaseException:
        dataset.stop(0)
        raise
    stack = Stack(dataset, addr, gateway, data_dir)
    try:
        image = make_image("PNG", seed=80)
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            assert add_rating(http, image, "alice", "0.5").status_code == 200
        stack.names["png"] = stored_name(image, "png")
        tag_image(stack, stack.names["png"], dict.fromkeys(TAGS, 0.9))
        yield stack
    finally:
        stack.stop()


def get(stack: Stack, **params: str) -> httpx.Response:
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        return http.get("/getuserdata", params={"user": "alice", **params})


def test_eighty_filter_tags_pass_the_gateway_when_the_service_allows_them(raised: Stack) -> None:
    response = get(raised, filters=",".join(TAGS[:80]))
    assert response.status_code == 200, response.text
    assert [item["image"] for item in response.json()["images"]] == [raised.names["png"]]
    # Excluded tags count too; the service's own message comes through.
    body = assert_error(get(raised, filters=",".join([*TAGS[:80], "-other"])), 400, "invalid_filters")
    assert "'filters'" in body["error"] and "at most 80" in body["error"]


def test_page_sizes_are_the_services(raised: Stack) -> None:
    paged = get(raised, page="1")
    assert paged.status_code == 200, paged.text
    assert (paged.json()["limit"], paged.json()["max_page"]) == (7, 1)  # DATASET_USERDATA_DEFAULT_LIMIT
    assert get(raised, page="1", limit="1500").json()["limit"] == 1500
    body = assert_error(get(raised, page="1", limit="1501"), 400, "invalid_limit")
    assert "'limit'" in body["error"] and "1500" in body["error"]
    # Checked whenever given, as before: also without a page.
    assert_error(get(raised, limit="1501"), 400, "invalid_limit")
    assert_error(get(raised, page="1", limit="0"), 400, "invalid_limit")


def test_userdata_bodies_match_their_model(raised: Stack) -> None:
    whole = get(raised, rated="all").json()
    assert set(whole) == {"user", "images", "total"}  # no paging fields without a page
    assert UserData.model_validate(whole).model_dump(exclude_unset=True) == whole
    paged = get(raised, page="1", limit="5").json()
    assert set(paged) == {"user", "images", "total", "page", "limit", "max_page"}
    assert UserData.model_validate(paged).model_dump(exclude_unset=True) == paged
    assert set(paged["images"][0]) == {"image", "rating", "rated_at", "predicted"}
