"""The taste loop in the browser (issue 26), in front of the whole real
system (``make run``'s supervisor) with automatic retraining on: the Rate
next screen walks /getratenext's queue with keys 1-7, the Why? panel shows
rated neighbours, My model lists the versions, refreshes by itself when an
automatic retraining publishes a new one, and switches back to an older
one. Screenshots go to tests/output/ui/."""

from __future__ import annotations

import httpx
import pytest

from tests.trainer.scenes import rated_scenes
from tests.ui import pages

from .conftest import start_run_stack
from .pages import DESKTOP, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow

LEVELS = [k / 6 for k in range(7)]


def wait_for(check, timeout: float = 180.0, what: str = "condition"):
    """:func:`tests.ui.pages.wait_for` with this screen's longer default."""
    return pages.wait_for(check, timeout, what)


@pytest.fixture(scope="module")
def loop_stack(browser, tmp_path_factory):
    stack = start_run_stack(
        tmp_path_factory.mktemp("ui-tasteloop-stack"),
        {
            "TRAINER_RETRAIN_AFTER_RATINGS": "10",
            "TRAINER_RETRAIN_MIN_INTERVAL_SECONDS": "0",
            "TRAINER_RETRAIN_QUIET_SECONDS": "1",
            "TRAINER_RETRAIN_POLL_SECONDS": "0.5",
        },
    )
    try:
        yield stack
    finally:
        try:
            stack.stop()
        finally:
            stack.kill_everything()


@pytest.fixture(scope="module")
def api(loop_stack):
    with httpx.Client(base_url=loop_stack.url, timeout=60) as client:
        yield client


def versions(api) -> list[dict]:
    response = api.get("/getmodels", params={"user": "tia"})
    assert response.status_code == 200, response.text
    return response.json()["versions"]


def rate(api, user: str, items) -> list[str]:
    names = []
    for png, rating in items:
        response = api.post("/addrating", data={"user": user, "rating": str(rating)}, files={"image": ("s.png", png)})
        assert response.status_code == 200, response.text
        names.append(response.json()["image"])
    return names


def test_rate_next_why_and_the_versions(browser, api, loop_stack, screenshots):
    scenes = rated_scenes(70, seed=31)
    rate(api, "pool", [(png, 0.5) for png, _, _ in scenes[30:]])  # 40 images tia has not rated
    rate(api, "tia", [(png, r) for png, _, r in scenes[:30]])
    # A version is listed once its head is stored and serves once the trainer has published it: wait for both.
    first = wait_for(lambda: (v := versions(api)) and v[0]["serving"] and v, what="tia's first automatic training")
    assert len(first) == 1

    with ui_page(browser, loop_stack.url, DESKTOP) as page:
        sign_in(page, "tia")
        page.goto("/#/ratenext")
        page.wait_for_selector("#ratenext-image")
        assert first[0]["version"] in page.locator("#model-freshness").inner_text()
        assert page.locator("#ratenext-reason").inner_text()
        shown = page.locator("#ratenext-image").get_attribute("alt").removeprefix("Image ")
        queue = api.get("/getratenext", params={"user": "tia", "limit": 20}).json()["images"]
        assert shown == queue[0]["image"]
        page.locator("#why summary").click()
        page.wait_for_selector("#why-neighbours li")
        shoot(page, screenshots, "ratenext-1280")
        page.keyboard.press("6")
        wait_for(lambda: page.locator("#ratenext-count").inner_text().startswith("1 rated"), 30, "the rating")
        rated = api.get("/getuserdata", params={"user": "tia"}).json()["images"]
        assert {i["image"]: i["rating"] for i in rated}[shown] == pytest.approx(LEVELS[5])
        assert page.locator("#ratenext-image").get_attribute("alt").removeprefix("Image ") != shown

        # The viewer's Why? panel, for an image with a prediction.
        page.goto(f"/#/image/{queue[1]['image']}")
        page.locator("#why summary").click()
        page.wait_for_selector("#why-neighbours li")

        # My model lists the version; 10 more ratings retrain by themselves and
        # the page shows the new version without a reload.
        page.goto("/#/model")
        page.wait_for_selector("#versions-table tbody tr")
        assert page.locator("#versions-table tbody tr").count() == 1
        rate(api, "tia", [(png, r) for png, _, r in rated_scenes(10, seed=32)])
        # (polled from here: the page's CSP rightly refuses wait_for_function's eval)
        wait_for(lambda: page.locator("#versions-table tbody tr").count() == 2, what="the page showing the new version")
        shoot(page, screenshots, "model-versions-1280")
        assert page.locator("#versions-table tbody tr").first.locator("td").nth(5).inner_text() == "Serving"
        page.locator("button.use-version").click()
        now = wait_for(lambda: (v := versions(api)) and [x["serving"] for x in v] == [False, True] and v, what="switch")
        assert now[1]["version"] == first[0]["version"]
        second = page.locator("#versions-table tbody tr").nth(1).locator("td").nth(5)
        wait_for(lambda: second.count() == 1 and second.inner_text() == "Serving", 60, "the switch on the page")
