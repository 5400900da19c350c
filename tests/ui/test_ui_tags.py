"""The browser UI's tags people own, end to end on the whole real system
(headless Chromium): in the viewer's one tag list, tags added with the
keyboard (t, type, Enter) and removed with its remove button, each source in
its own colour, a click on a tag toggling it in the library's filter, taught
tags offered as suggestions accepted and rejected with a and r; in the admin
screen, an alias and an implication added and deleted; in the library, tags
added to and removed from a grid selection (with the tag box's
suggestions). What the page shows is checked against what the REST API then
reports."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.imagefactory import make_image
from tests.trainer.scenes import scene

from .conftest import wait_for_tiles
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
        page.wait_for_selector("#tags li.tag-manual:has-text('fluffy_tail')")
        assert {("cat", "manual"), ("fluffy_tail", "manual"), ("1girl", "manual")} <= set(detail(api, image))
        # Typing in the box is not a shortcut: the "1" of 1girl did not rate the image.
        listing = api.get("/getuserdata", params={"user": "tagger"}).json()
        assert listing["images"][0]["rating"] == 0.5
        color = page.locator("#tags li.tag-manual").first.evaluate("el => getComputedStyle(el).backgroundColor")
        assert color == "rgb(227, 241, 236)"  # the manual colour
        shoot(page, screenshots, "viewer-tags-1280")
        page.click("#tags li.tag-manual:has-text('cat') .tag-remove")
        page.wait_for_selector("#tags li.tag-manual:has-text('cat')", state="detached")
        assert ("cat", "manual") not in detail(api, image)
        # One list: the tagger's tags beside the manual ones, each removable.
        model_tags = [t for t, source in detail(api, image) if source == "model"]
        shown_model = page.locator("#tags li.tag-model a").evaluate_all("els => els.map(e => e.dataset.tag)")
        assert shown_model == model_tags
        assert page.locator("#tags li.tag-model .tag-remove").count() == len(model_tags)
        assert page.locator("#tag-edit-list").count() == 0 and page.locator("h3:has-text('Edit tags')").count() == 0
        # A click on a tag puts it in the library's filter; from there, the viewer shows it pressed.
        page.click("#tags li.tag-manual a[data-tag='fluffy_tail']")
        page.wait_for_url("**filters=fluffy_tail**")
        page.wait_for_selector("#grid .tile")
        assert page.locator("#grid .tile").evaluate_all("ts => ts.map(t => t.dataset.image)") == [image]
        page.goto(f"/#/image/{image}?rated=all&filters=fluffy_tail")
        page.wait_for_selector("#tags a[data-tag='fluffy_tail'][aria-pressed='true']")
        page.click("#tags a[data-tag='fluffy_tail']")  # toggles it out again
        page.wait_for_url(lambda url: "#/library" in url and "fluffy_tail" not in url)
        page.goto(f"/#/image/{image}?rated=all")
        page.wait_for_selector("#tag-input")
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


def taught_images(api: httpx.Client, names: list[str], tag: str) -> list[str]:
    return [name for name in names if (tag, "taught") in detail(api, name)]


def test_viewer_accepts_and_rejects_taught_suggestions_with_a_and_r(browser, run_stack, screenshots):
    """A manual tag on 8 look-alike images is taught (the real trainer); the
    viewer shows the taught tag in the one list with accept/reject, and the
    a and r keys make it manual or remove it (then a negative example)."""
    circles = [scene(0.85 + 0.005 * i, 9300 + i) for i in range(20)]
    stripes = [scene(0.05 + 0.01 * i, 9400 + i) for i in range(10)]
    names = [f"{hashlib.sha256(data).hexdigest()}.png" for data in circles]
    with httpx.Client(base_url=run_stack.url, timeout=60) as api:
        for data in circles + stripes:
            response = api.post(
                "/addrating", data={"user": "teacher", "rating": "0.5"}, files={"image": ("s.png", data)}
            )
            assert response.status_code == 200, response.text
        for name in names[:8]:
            assert api.post("/addtags", data={"image": name, "tag": "hoops"}).status_code == 200
        deadline = time.monotonic() + 180
        while len(taught := taught_images(api, names[8:], "hoops")) < 2:
            assert time.monotonic() < deadline, f"never taught to two look-alikes: {api.get('/taughttags').json()}"
            time.sleep(1)
        accepted, rejected = taught[:2]
        with ui_page(browser, run_stack.url, DESKTOP) as page:
            sign_in(page, "teacher")
            page.goto(f"/#/image/{accepted}?rated=all")
            page.wait_for_selector("#tags li.tag-taught a[data-tag='hoops']")
            assert page.locator("#tags li.tag-taught .tag-accept").count() == 1  # one list, inline
            assert page.locator("#tags li.tag-taught .tag-remove").count() == 0
            shoot(page, screenshots, "viewer-taught-1280")
            page.keyboard.press("a")
            page.wait_for_selector("#tags li.tag-manual a[data-tag='hoops']")
            assert ("hoops", "manual") in detail(api, accepted)
            page.goto(f"/#/image/{rejected}?rated=all")
            page.wait_for_selector("#tags li.tag-taught a[data-tag='hoops']")
            page.keyboard.press("r")
            page.wait_for_selector("#tags a[data-tag='hoops']", state="detached")
            assert "hoops" not in [tag for tag, _ in detail(api, rejected)]
        # The accepted one is a new example, the rejected one a negative.
        deadline = time.monotonic() + 120
        while not ((info := api.get("/taughttags").json()) and info[0]["negatives"] >= 1 and info[0]["examples"] >= 9):
            assert time.monotonic() < deadline, f"never relearned: {info}"
            time.sleep(1)


def test_bulk_tags_from_the_grids_selection(browser, run_stack, screenshots):
    """Tags added to and removed from the selected images at once: a
    suggested tag taken with the keyboard plus a new one, then one removed
    (the grid filtered on it loses those images); a bad name changes
    nothing and says why, the selection kept."""
    datas = [make_image("PNG", (64, 48), seed=2600 + i) for i in range(3)]
    names = [f"{hashlib.sha256(data).hexdigest()}.png" for data in datas]
    with httpx.Client(base_url=run_stack.url, timeout=60) as api:
        for data in datas:
            response = api.post(
                "/addrating", data={"user": "bulktags", "rating": "0.5"}, files={"image": ("b.png", data)}
            )
            assert response.status_code == 200, response.text
        for name in names:
            assert api.post("/addtags", json={"image": name, "tags": ["bulkset"]}).status_code == 200
        # A tag the collection already has, for the box to suggest.
        assert api.post("/addtags", json={"image": names[2], "tags": ["fluffymarker"]}).status_code == 200
        shown = sorted(names)
        picked = shown[:2]
        with ui_page(browser, run_stack.url, DESKTOP) as page:
            sign_in(page, "bulktags")
            page.goto("/#/library?rated=all&sort=name-asc&filters=bulkset")
            wait_for_tiles(page, shown)
            page.click("#select-mode")
            for name in picked:
                page.click(f"#grid .tile[data-image='{name}'] a")
            assert page.locator("#selected-count").inner_text() == "2 images selected"
            page.click("#bulk-tags summary")
            page.click("#bulk-tags-input")
            page.keyboard.type("fluffym")
            page.wait_for_selector("#bulk-tags-suggestions [role=option][data-tag='fluffymarker']")
            page.keyboard.press("ArrowDown")
            page.keyboard.press("Enter")  # takes the suggestion
            assert page.input_value("#bulk-tags-input") == "fluffymarker, "
            page.keyboard.type("Bulk Sofa")
            page.keyboard.press("Escape")  # closes any suggestions: Enter then adds
            page.keyboard.press("Enter")
            page.wait_for_selector(".toast:has-text('Tagged fluffymarker, Bulk Sofa: 2 images.')")
            for name in picked:
                assert {("fluffymarker", "manual"), ("bulk_sofa", "manual")} <= set(detail(api, name))
            assert "bulk_sofa" not in [tag for tag, _ in detail(api, shown[2])]
            shoot(page, screenshots, "library-bulk-tags-1280")

            # A bad name: the API's reason in the panel, nothing tagged, the selection kept.
            wait_for_tiles(page, shown)
            for name in picked:
                page.click(f"#grid .tile[data-image='{name}'] a")
            page.click("#bulk-tags summary")
            page.fill("#bulk-tags-input", "rating:x")
            page.click("#bulk-tags-add")
            page.wait_for_selector("#bulk-tags-message:has-text('rating:')")
            assert page.locator("#selected-count").inner_text() == "2 images selected"

            # Removed from the two: the grid filtered on it keeps the third only.
            page.fill("#bulk-tags-input", "bulkset")
            page.click("#bulk-tags-remove")
            page.wait_for_selector(".toast:has-text('Untagged bulkset: 2 images.')")
            wait_for_tiles(page, [shown[2]])
            for name in picked:
                assert "bulkset" not in [tag for tag, _ in detail(api, name)]
            assert ("bulkset", "manual") in detail(api, shown[2])
