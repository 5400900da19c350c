"""The Albums screens in headless Chromium, in front of the whole real
system (``make run``): the chat bot's montage post shown among the user's
albums, a new album made from a grid selection, reordering and removing in
the album's grid, stepping through the album in the viewer with its keys,
and "Add to album" from the viewer; each checked against the REST API.
Screenshots at 1280 and 360 px and in the dark colour scheme go to
tests/output/ui/."""

from __future__ import annotations

import httpx
import pytest

from .conftest import wait_for_tiles
from .pages import PHONE, distinct_image, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow

USER = "4242424242"  # a numeric chat id, as the bot's users have


@pytest.fixture(scope="module")
def album_api(run_stack):
    with httpx.Client(base_url=run_stack.url, timeout=60) as api:
        names = []
        for i in range(6):
            data = distinct_image("JPEG", 4200 + i, (120, 90 + 6 * i))
            response = api.post(
                "/addrating", data={"user": USER, "rating": "0.5"}, files={"image": (f"bot{i}.jpg", data)}
            )
            assert response.status_code == 200, response.text
            names.append(response.json()["image"])
        posted = api.post("/createmontagepost", data={"user": USER, "filenames": "bot0.jpg,bot1.jpg"})
        assert posted.status_code == 200, posted.text
        yield api, names, posted.json()["montagepost_id"]


def album_order(api, album_id: int) -> list[str]:
    return [i["image"] for i in api.get(f"/albums/{album_id}").json()["images"]]


def test_albums_screen_create_reorder_remove_and_step_through(browser, album_api, run_stack, screenshots):
    api, names, post_id = album_api
    with ui_page(browser, run_stack.url) as page:
        sign_in(page, USER)
        page.click("#nav-albums")
        page.wait_for_selector(f"#albums .tile[data-album='{post_id}']")
        assert "Untitled album" in page.inner_text("#albums")
        shoot(page, screenshots, "albums-list-desktop")

        # A new album from a grid selection: pick three images, in this order.
        page.click("#new-album-toggle")
        page.fill("#new-album-name", "Favourites")
        page.wait_for_selector("#new-album-picker-grid .tile")
        picks = [names[4], names[1], names[3]]
        for name in picks:
            page.click(f"#new-album-picker-grid .tile[data-image='{name}'] button")
        assert page.inner_text("#new-album-picker-count") == "3 images picked"
        shoot(page, screenshots, "albums-new-desktop")
        page.click("#new-album-picker-go")
        page.wait_for_selector("#album-title")
        wait_for_tiles(page, picks)
        album_id = int(page.url.split("#/album/")[1].split("?")[0])
        assert page.inner_text("#album-title") == "Favourites"
        assert album_order(api, album_id) == picks
        shoot(page, screenshots, "album-grid-desktop")

        # Reorder: the first one later; then take the middle one out.
        page.click(f"#grid .tile[data-image='{picks[0]}'] .move-later")
        wait_for_tiles(page, [picks[1], picks[0], picks[2]])
        assert album_order(api, album_id) == [picks[1], picks[0], picks[2]]
        page.click(f"#grid .tile[data-image='{picks[0]}'] .remove-from-album")
        wait_for_tiles(page, [picks[1], picks[2]])
        assert album_order(api, album_id) == [picks[1], picks[2]]
        assert api.get("/getimage", params={"image": picks[0]}).status_code == 200  # still stored

        # The viewer steps through the album in its order, with its keys.
        page.click(f"#grid .tile[data-image='{picks[1]}'] a")
        page.wait_for_selector("#viewer-image")
        assert page.inner_text("#position") == "1 of 2"
        page.keyboard.press("ArrowRight")
        page.wait_for_function("n => location.hash.startsWith('#/image/' + n)", arg=picks[2])
        page.wait_for_function("() => (document.querySelector('#position') || {}).textContent === '2 of 2'")
        assert "album=" in page.url
        page.keyboard.press("7")
        page.wait_for_function("() => (document.querySelector('#my-rating') || {}).textContent === 'SS'")
        page.keyboard.press("Escape")
        page.wait_for_selector("#album-title")
        assert page.url.endswith(f"#/album/{album_id}")
        assert api.get(f"/albums/{album_id}").json()["images"][1]["rating"] == 1.0

        page.fill("#album-name", "Best of")
        page.click("#rename-album")
        page.wait_for_function("() => (document.querySelector('#album-title') || {}).textContent === 'Best of'")
        page.emulate_media(color_scheme="dark")
        shoot(page, screenshots, "album-grid-dark")
        page.emulate_media(color_scheme="light")

        # From the viewer: "Add to album" into a new album.
        page.goto(f"/#/image/{names[5]}")
        page.wait_for_selector("#viewer-image")
        page.click("#album-picker summary")
        page.fill("#album-picker-name", "From the viewer")
        page.click("#album-picker-add")
        page.wait_for_selector("#album-picker-open")
        made = [a for a in api.get("/albums", params={"user": USER}).json()["albums"] if a["name"] == "From the viewer"]
        assert len(made) == 1 and album_order(api, made[0]["id"]) == [names[5]]
        # ... and into an existing one.
        page.select_option("#album-picker-choice", str(album_id))
        page.click("#album-picker-add")
        page.wait_for_function(
            "() => (document.querySelector('#album-picker-message') || {textContent: ''})"
            ".textContent.includes('Best of')"
        )
        assert album_order(api, album_id) == [picks[1], picks[2], names[5]]

        # Deleting the album keeps its images.
        page.goto(f"/#/album/{album_id}")
        page.click("#delete-album")
        page.click("#confirm-delete-album")
        page.wait_for_selector("#albums")
        assert api.get(f"/albums/{album_id}").status_code == 404

    with ui_page(browser, run_stack.url, PHONE) as page:
        sign_in(page, USER)
        page.goto(f"/#/album/{post_id}")
        wait_for_tiles(page, names[:2])
        shoot(page, screenshots, "album-grid-phone")
        page.goto("/#/albums")
        page.wait_for_selector("#albums .tile")
        shoot(page, screenshots, "albums-list-phone")
