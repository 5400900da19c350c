"""The everyday gallery in headless Chromium (issue 22), at 1280x800 and at a
390x844 phone, in front of the whole real system (the session's ``make
run`` stack): a user with no ratings sees the library; "For you" shows the
unrated with a word on the model; one rank scale (F..SS) with decimals on
the nearest rank; the tag box (substrings, keys, counts; viewer tags toggle
into the filter); numbered pages with jump-to-page; multi-select with bulk
rate / remove / delete / add to album; toasts; zoom, full screen, the
original file and swipe in the viewer; upload previews; the dark theme; and
a service error that recovers by itself once the service is back."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time

import pytest

from tests.support import REPO_ROOT

from .conftest import wait_for_tiles
from .everyday import RANKS, RATER, UNRATED, listing, names, rank_of
from .pages import DESKTOP, PHONE_390, distinct_image, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow


@pytest.fixture
def api(library_api):
    return library_api


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE_390], ids=["1280", "390"])
def test_a_newcomer_sees_the_library_for_you_and_reset(browser, library, api, run_stack, screenshots, viewport):
    user = f"yan{viewport['width']}"
    with ui_page(browser, run_stack.url, viewport) as page:
        sign_in(page, user)
        # No ratings of theirs: every stored image, unrated, in the default order.
        page.wait_for_url("**rated=all**")
        first = listing(api, user, rated="all", page=1, limit=60)
        assert first["total"] >= UNRATED + 12
        wait_for_tiles(page, names(first))
        assert page.locator("#grid .badge.rank").count() == 0
        assert page.evaluate("document.scrollingElement.scrollWidth") <= viewport["width"]
        shoot(page, screenshots, f"everyday-newcomer-{viewport['width']}")

        # "For you": the images not rated yet; without a model, what it needs.
        page.select_option("#sort", "predicted-desc")
        page.wait_for_url("**sort=predicted-desc**")
        assert "rated=no" in page.url
        for_you = listing(api, user, rated="no", sort="predicted-desc", page=1, limit=60)
        wait_for_tiles(page, names(for_you))
        if all(i["predicted"] is None for i in for_you["images"]):
            page.wait_for_selector("#for-you-hint:has-text('rate 10 more images')")
            assert page.locator("#hint-rate").is_visible()
        else:  # a global model predicts for everyone: no hint
            time.sleep(1)
            assert page.locator("#for-you-hint").count() == 0

        # A filter nothing matches: the empty state offers to reset.
        page.fill("#filter", "no_such_tag_here")
        page.press("#filter", "Enter")
        page.wait_for_selector(".empty:has-text('No images match these tags.')")
        assert page.locator("#reset-filters").is_visible()
        page.click("#empty-reset")
        page.wait_for_url("**rated=all**")
        assert "filters" not in page.url and "predicted" not in page.url
        wait_for_tiles(page, names(first))
        assert page.locator("#reset-filters").count() == 0  # the newcomer's default view again
    assert set(page.recorder.statuses) <= {404}  # the first look at the rated list of someone unknown


def test_a_user_with_ratings_and_no_model_is_offered_training(browser, library, api, run_stack):
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, RATER)
        wait_for_tiles(page, names(listing(api, RATER, page=1, limit=60)))
        assert "rated=all" not in page.url  # a user with ratings starts on them
        page.select_option("#sort", "predicted-desc")
        page.wait_for_url("**rated=no**")
        for_you = listing(api, RATER, rated="no", sort="predicted-desc", page=1, limit=60)
        if all(i["predicted"] is None for i in for_you["images"]):
            have = listing(api, RATER)["total"]
            page.wait_for_selector(f"#for-you-hint:has-text('You have {have} ratings')")
            assert page.locator("#hint-train").is_visible()


def test_ranks_and_a_decimal_rating_on_the_nearest_rank(browser, library, api, run_stack, screenshots):
    decimal = library["rated"][0]
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, RATER)
        expected = listing(api, RATER, page=1, limit=60, sort="name-asc")
        page.goto("/#/library?sort=name-asc")
        wait_for_tiles(page, names(expected))
        for item in expected["images"]:
            badge = page.locator(f"#grid .tile[data-image='{item['image']}'] .badge.rank")
            assert badge.inner_text() == rank_of(item["rating"])
            assert badge.get_attribute("data-rank") == str(RANKS.index(rank_of(item["rating"])))
        # The rank colours of the original web front end, on the tiles.
        colour = page.locator(f"#grid .tile[data-image='{decimal}'] .badge.rank").evaluate(
            "e => getComputedStyle(e).backgroundColor"
        )
        assert colour == "rgb(232, 183, 63)"  # B: #e8b73f
        assert page.locator(f"#grid .tile[data-image='{decimal}'] .badge.rank").get_attribute("title") == "B (0.55)"

        # 0.55 (a CLI decimal) presses B, the nearest rank, and shows its exact value on hover.
        page.locator(f"#grid .tile[data-image='{decimal}'] a").click()
        page.wait_for_selector("#viewer-image")
        assert page.locator("#my-rating").inner_text() == "B"
        assert page.locator("#my-rating").get_attribute("title") == "B (0.55)"
        pressed = page.locator(".levels .level[aria-pressed='true']")
        assert pressed.count() == 1 and pressed.inner_text() == "B" and pressed.get_attribute("data-level") == "4"
        assert page.locator(".levels .level").all_inner_texts() == RANKS
        shoot(page, screenshots, "everyday-decimal-1280")
        # Set through the API to another decimal: the next view presses its nearest rank.
        response = api.post("/updaterating", json={"image": decimal, "user": RATER, "rating": 0.93})
        assert response.status_code == 200, response.text
        page.reload()
        page.wait_for_selector("#my-rating:text-is('SS')")
        assert page.locator(".levels .level[aria-pressed='true']").inner_text() == "SS"


def test_a_decimal_imported_by_the_cli_presses_its_nearest_rank(browser, library, api, run_stack, tmp_path):
    """`tagrate import DIR --ratings ratings.csv` with a decimal rating (0.4:
    between C = 2/6 and B = 3/6): the viewer presses C and says 0.40 on hover."""
    folder = tmp_path / "import"
    folder.mkdir()
    data = distinct_image("PNG", 7950, (48, 48))
    (folder / "decimal.png").write_bytes(data)
    (tmp_path / "ratings.csv").write_text(f"path,user,rating\ndecimal.png,{RATER},0.4\n")
    command = ["-m", "tagrate_cli", "--url", run_stack.url, "import", str(folder), "--ratings"]
    result = subprocess.run(
        [sys.executable, *command, str(tmp_path / "ratings.csv")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    name = f"{hashlib.sha256(data).hexdigest()}.png"
    assert {i["image"]: i["rating"] for i in listing(api, RATER)["images"]}[name] == pytest.approx(0.4)
    with ui_page(browser, run_stack.url, PHONE_390) as page:
        sign_in(page, RATER)
        page.goto(f"/#/image/{name}")
        page.wait_for_selector("#my-rating:text-is('C')")
        assert page.locator("#my-rating").get_attribute("title") == "C (0.40)"
        pressed = page.locator(".levels .level[aria-pressed='true']")
        assert pressed.count() == 1 and pressed.inner_text() == "C"


def test_tag_box_substrings_keys_and_viewer_tags_toggle(browser, library, api, run_stack, screenshots):
    tags = api.get("/gettags").json()
    assert tags["tags"], "the real tagger tagged nothing"
    counts = dict(zip(tags["tags"], tags["counts"], strict=True))
    # A tag typed the way people type: with spaces for "_" when it has one, else a middle piece.
    plain = [t for t in tags["tags"] if re.fullmatch(r"[a-z0-9_]{3,}", t)]  # safe in a URL and a CSS selector
    tag = next((t for t in plain if "_" in t), max(plain, key=counts.__getitem__))
    typed = tag.replace("_", " ").upper() if "_" in tag else tag[1:-1].upper()
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "kim")
        page.wait_for_url("**rated=all**")
        page.click("#filter")
        page.keyboard.type(typed)
        page.wait_for_function(
            "t => [...document.querySelectorAll('#tag-suggestions [role=option]')].some(o => o.dataset.tag === t)",
            arg=tag,
        )
        options = page.locator("#tag-suggestions [role=option]")
        shown = [options.nth(i).get_attribute("data-tag") for i in range(options.count())]
        wanted = typed.lower().replace(" ", "_")
        assert all(wanted in t for t in shown), shown
        # Each suggestion with its image count.
        assert options.first.locator("small").inner_text() == str(counts[shown[0]])
        shoot(page, screenshots, "everyday-tagbox-1280")
        # ↓ to the tag, Enter takes it, a second Enter applies the filter.
        for _ in range(shown.index(tag) + 1):
            page.keyboard.press("ArrowDown")
        assert page.locator("#tag-suggestions [aria-selected='true']").get_attribute("data-tag") == tag
        page.keyboard.press("Enter")
        assert page.input_value("#filter") == f"{tag}, "
        page.keyboard.press("Enter")
        page.wait_for_url(f"**filters={tag}**")
        filtered = listing(api, "kim", rated="all", filters=tag, page=1, limit=60)
        wait_for_tiles(page, names(filtered))

        # In the viewer a tag click adds the tag to the filter; on it already, takes it out.
        page.locator("#grid .tile a").first.click()
        page.wait_for_selector("#viewer-image")
        image = page.url.split("#/image/")[1].split("?")[0]
        image_tags = [t for t, _ in api.get("/getimagetags", params={"image": image, "scores": "true"}).json()["tags"]]
        assert tag in image_tags
        assert page.locator(f"#tags a[data-tag='{tag}']").get_attribute("aria-pressed") == "true"
        other = next((t for t in image_tags if t != tag), None)
        if other is not None:
            page.click(f"#tags a[data-tag='{other}']")
            page.wait_for_url("**#/library**")
            assert {t.strip() for t in page.input_value("#filter").split(",")} == {tag, other}
            wait_for_tiles(page, names(listing(api, "kim", rated="all", filters=f"{tag},{other}", page=1, limit=60)))
            page.go_back()
            page.wait_for_selector("#viewer-image")
        page.click(f"#tags a[data-tag='{tag}']")
        page.wait_for_url("**#/library**")
        assert page.input_value("#filter") == ""


def test_numbered_pages_and_jump_to_page(browser, library, api, run_stack):
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "kim")
        page.goto("/#/library?rated=all&sort=name-asc")
        reply = listing(api, "kim", rated="all", sort="name-asc", page=1, limit=60)
        wait_for_tiles(page, names(reply))
        pages = reply["max_page"]
        assert pages >= 2
        for where in ("#top-page-info", "#page-info"):  # above and below the grid
            assert page.locator(where).inner_text() == f"Page 1 of {pages} · {reply['total']} images"
        numbers = page.locator(".pager").first.locator("a.num")
        assert numbers.first.get_attribute("aria-current") == "page"
        assert numbers.last.inner_text() == str(pages)
        # A numbered link, then jump-to-page at the bottom back to page 1.
        page.locator(".pager").first.locator("a.num[data-page='2']").click()
        page.wait_for_url("**page=2**")
        wait_for_tiles(page, names(listing(api, "kim", rated="all", sort="name-asc", page=2, limit=60)))
        page.fill("#page-jump", "1")
        page.press("#page-jump", "Enter")
        page.wait_for_function("() => !location.hash.includes('page=')")
        wait_for_tiles(page, names(reply))
        page.fill("#top-page-jump", str(pages + 5))  # past the end: the last page
        page.press("#top-page-jump", "Enter")
        page.wait_for_url(f"**page={pages}**")
