"""Finding things in the browser (issue 27), against the whole real system
(``make run``): the viewer's "More like this" strip opens a similar image
with the list's filters kept, and the Duplicates screen shows a group side
by side and resolves it with a key, which the REST API then reports."""

from __future__ import annotations

import io
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from tests.similar.photos import photo
from tests.trainer.scenes import scene
from tests.ui import pages

from .pages import DESKTOP, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow


def wait_for(check, timeout: float = 180.0, what: str = "condition"):
    """:func:`tests.ui.pages.wait_for` with this screen's longer default."""
    return pages.wait_for(check, timeout, what)


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def test_more_like_this_and_the_duplicates_screen(browser, run_stack, screenshots) -> None:
    with httpx.Client(base_url=run_stack.url, timeout=60) as api:
        coffee = photo("coffee").resize((300, 200))
        names = {}
        for key, data in (
            ("coffee", encoded(coffee, "JPEG")),
            ("coffee-copy", encoded(coffee, "PNG")),
            *((f"circle{n}", scene(1.0, 7000 + n, 128)) for n in range(4)),
        ):
            response = api.post(
                "/addrating", data={"user": "gina", "rating": "0.5"}, files={"image": (f"{key}.img", data)}
            )
            assert response.status_code == 200, response.text
            names[key] = response.json()["image"]

        def grouped():
            answer = api.get("/getduplicates").json()
            return answer if answer["pending"] == 0 and answer["total"] >= 1 else None

        wait_for(grouped, what="the duplicate groups")
        with ui_page(browser, run_stack.url, DESKTOP) as page:
            sign_in(page, "gina")
            page.goto(f"/#/image/{quote(names['circle0'])}?rated=yes&sort=name-asc")
            page.wait_for_selector("#similar-strip .tile")
            shoot(page, screenshots, "viewer-similar-1280")
            first = page.locator("#similar-strip .tile").first
            target = first.get_attribute("data-image")
            first.locator("a").click()
            page.wait_for_function("name => location.hash.includes(encodeURIComponent(name))", arg=target)
            assert "rated=yes" in page.evaluate("location.hash") and "sort=name-asc" in page.evaluate("location.hash")

            page.goto("/#/duplicates")
            page.wait_for_selector(".dup-card")
            shown = {page.locator(".dup-card").nth(k).get_attribute("data-image") for k in range(2)}
            assert shown == {names["coffee"], names["coffee-copy"]}
            assert "group" in page.locator("#dup-progress").inner_text()
            shoot(page, screenshots, "duplicates-1280")
            left = page.locator(".dup-card").first.get_attribute("data-image")
            page.keyboard.press("ArrowLeft")
            page.wait_for_selector(".empty")
        assert api.get("/getduplicates").json()["total"] == 0
        ratings = {i["image"] for i in api.get("/getuserdata", params={"user": "gina"}).json()["images"]}
        assert left in ratings and len({names["coffee"], names["coffee-copy"]} & ratings) == 1
