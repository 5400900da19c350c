"""The browser UI's tags people own, end to end on the whole real system
(headless Chromium): in the viewer, tags added with the keyboard (t, type,
Enter) and removed with its remove button, each source in its own colour; in the admin
screen, an alias and an implication added and deleted. What the page shows
is checked against what the REST API then reports."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.imagefactory import make_image

from .pages import DESKTOP, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image(run_stack) -> str:
    data = make_image("JPEG", (120, 90), seed=2500)
    with httpx.Client(base_url=run_stack.url, timeout=60) as api:
        response = api.post("/addrating", data={"user": "tagger", "rating": "0.5"}, files={"image": ("t.jpg", data)})
        assert response.status_code == 200, response.text
    return f"{hashlib.sha256(data).hexdigest()}.jpg"


def detail(api: httpx.Client, image: str) -> list[tuple[str, str]]:
    body = api.get("/getimagetags", params={"image": image, "detail": "true"}).json()
    return [(t["tag"], t["source"]) for t in body["tags"]]


def test_viewer_adds_and_removes_tags_with_the_keyboard(browser, run_stack, image, screenshots):
    with httpx.Client(base_url=run_stack.url, timeout=60) as api, ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "tagger")
        page.goto(f"/#/image/{image}?rated=all")
        page.wait_for_selector("#tag-input")
        page.keyboard.press("t")
        assert page.evaluate("() => document.activeElement.id") == "tag-input"
        page.keyboard.type("Fluffy Tail, cat, 1girl")
        page.keyboard.press("Enter")
        page.wait_for_selector("#tag-edit-list li.tag-manual:has-text('fluffy_tail')")
        assert {("cat", "manual"), ("fluffy_tail", "manual"), ("1girl", "manual")} <= set(detail(api, image))
        # Typing in the box is not a shortcut: the "1" of 1girl did not rate the image.
        listing = api.get("/getuserdata", params={"user": "tagger"}).json()
        assert listing["images"][0]["rating"] == 0.5
        color = page.locator("#tag-edit-list li.tag-manual").first.evaluate(
            "el => getComputedStyle(el).backgroundColor"
        )
        assert color == "rgb(227, 241, 236)"  # the manual colour
        shoot(page, screenshots, "viewer-tags-1280")
        page.click("#tag-edit-list li.tag-manual:has-text('cat') .tag-remove")
        page.wait_for_selector("#tag-edit-list li.tag-manual:has-text('cat')", state="detached")
        assert ("cat", "manual") not in detail(api, image)
        # A bad name: the API's message, nothing added.
        page.fill("#tag-input", "-bad")
        page.keyboard.press("Enter")
        page.wait_for_selector("#tag-status:has-text('-bad')")
        assert ("-bad", "manual") not in detail(api, image)


def test_admin_adds_and_deletes_an_alias_and_an_implication(browser, run_stack, screenshots):
    with httpx.Client(base_url=run_stack.url, timeout=60) as api, ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "tagger")
        page.goto("/#/admin")
        page.wait_for_selector("#alias-form")
        page.fill("#alias-form-alias", "kitty")
        page.fill("#alias-form-tag", "housecat")
        page.click("#alias-form button[type=submit]")
        page.wait_for_selector("#alias-table td:has-text('kitty')")
        assert {"alias": "kitty", "tag": "housecat"} in api.get("/tagaliases").json()["aliases"]
        page.fill("#implication-form-tag", "housecat")
        page.fill("#implication-form-implies", "animal")
        page.click("#implication-form button[type=submit]")
        page.wait_for_selector("#implication-table td:has-text('animal')")
        assert {"tag": "housecat", "implies": "animal"} in api.get("/tagimplications").json()["implications"]
        # A cycle: the API's 409 message is shown, nothing added.
        page.fill("#implication-form-tag", "animal")
        page.fill("#implication-form-implies", "housecat")
        page.click("#implication-form button[type=submit]")
        page.wait_for_selector("#implication-form span:has-text('cycle')")
        shoot(page, screenshots, "admin-tag-rules-1280")
        page.click("#alias-table tr:has-text('kitty') button")
        page.wait_for_selector("#alias-table td:has-text('kitty')", state="detached")
        assert api.get("/tagaliases").json()["aliases"] == []
