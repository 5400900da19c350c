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
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support import REPO_ROOT

from .conftest import wait_for_tiles
from .pages import DESKTOP, PHONE_390, distinct_image, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow

RANKS = ["F", "D", "C", "B", "A", "S", "SS"]
UNRATED = 62  # with the rated ones: more than one page of 60 for a newcomer
RATER = "zoe"  # rates a few images; "yan" and "kim" never rate


def wait_for(check, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def rank_of(rating: float) -> str:
    return RANKS[int(rating * 6 + 0.5)]  # JavaScript's Math.round for 0..6


@pytest.fixture(scope="module")
def api(run_stack):
    with httpx.Client(base_url=run_stack.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def library(api) -> dict[str, list[str]]:
    """62 images stored unrated (as `tagrate import` of a folder without
    ratings leaves them) and 12 rated by zoe, one of them a decimal (0.55,
    as the CLI imports a ratings CSV); every image tagged."""
    unrated, rated = [], []
    for i in range(UNRATED):
        data = distinct_image("JPEG", 7000 + i, (64 + i % 5 * 8, 64))
        response = api.post("/addimage", files={"image": (f"plain{i}.jpg", data)})
        assert response.status_code == 200, response.text
        unrated.append(response.json()["image"])
    for i in range(12):
        rating = 0.55 if i == 0 else round(i % 7 / 6, 6)
        data = distinct_image("PNG", 7500 + i, (72, 72))
        response = api.post(
            "/addrating", data={"user": RATER, "rating": str(rating)}, files={"image": (f"r{i}.png", data)}
        )
        assert response.status_code == 200, response.text
        rated.append(response.json()["image"])
    wait_for(lambda: api.get("/verifydatasets").json()["untagged_images"] == 0, what="the tagger")
    return {"unrated": unrated, "rated": rated}


def listing(api, user: str, **params) -> dict:
    response = api.get("/getuserdata", params={"user": user, **params})
    assert response.status_code == 200, response.text
    return response.json()


def names(reply: dict) -> list[str]:
    return [i["image"] for i in reply["images"]]


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


def test_bulk_rate_remove_delete_and_album_from_a_selection(browser, library, api, run_stack, screenshots):
    user = "bulky"
    with ui_page(browser, run_stack.url, PHONE_390) as page:
        sign_in(page, user)
        page.goto("/#/library?rated=all&sort=name-asc")
        first = names(listing(api, user, rated="all", sort="name-asc", page=1, limit=60))
        wait_for_tiles(page, first)
        page.click("#select-mode")
        assert page.locator("#bulk-bar").is_visible()
        picked = first[:3]
        for name in picked:
            page.click(f"#grid .tile[data-image='{name}'] a")
        assert page.locator("#selected-count").inner_text() == "3 images selected"
        assert "#/library" in page.url  # a click selects in this mode, it does not open the viewer
        shoot(page, screenshots, "everyday-select-390")

        # Rate the three S at once.
        page.click("#bulk-bar .bulk-level[data-level='6']")
        page.wait_for_selector(".toast:has-text('Rated S: 3 images.')")
        ratings = {i["image"]: i["rating"] for i in listing(api, user, rated="yes")["images"]}
        assert ratings == {name: pytest.approx(5 / 6) for name in picked}
        page.wait_for_selector(f"#grid .tile[data-image='{picked[0]}'] .badge.rank:text-is('S')")

        # Remove two of the ratings.
        for name in picked[:2]:
            page.click(f"#grid .tile[data-image='{name}'] a")
        page.click("#bulk-remove")
        page.wait_for_selector(".toast:has-text('Removed the rating of 2 images.')")
        assert names(listing(api, user, rated="yes")) == [picked[2]]

        # An album made from a selection, in the order picked.
        album_images = [first[4], first[3]]
        for name in album_images:
            page.click(f"#grid .tile[data-image='{name}'] a")
        page.click("#bulk-album summary")
        page.fill("#bulk-album-name", "Picked on a phone")
        page.click("#bulk-album-add")
        page.wait_for_selector("#bulk-album-open")
        albums = api.get("/albums", params={"user": user}).json()["albums"]
        made = next(a for a in albums if a["name"] == "Picked on a phone")
        assert [i["image"] for i in api.get(f"/albums/{made['id']}").json()["images"]] == album_images

        # Delete one image for everyone (with access control off anyone may).
        page.click("#select-clear")
        victim = first[5]
        page.click(f"#grid .tile[data-image='{victim}'] a")
        page.click("#bulk-delete")
        page.click("#bulk-confirm-delete")
        page.wait_for_selector(".toast:has-text('Deleted 1 image.')")
        assert api.get("/getimage", params={"image": victim}).status_code == 404
        page.wait_for_selector(f"#grid .tile[data-image='{first[6]}']")
        assert page.locator(f"#grid .tile[data-image='{victim}']").count() == 0
        # Escape leaves selection mode: a click opens the viewer again.
        page.keyboard.press("Escape")
        assert page.locator("#bulk-bar").is_hidden()
        page.click(f"#grid .tile[data-image='{first[6]}'] a")
        page.wait_for_selector("#viewer-image")


def test_viewer_zoom_full_screen_original_and_swipe(browser, library, api, run_stack, screenshots):
    with ui_page(browser, run_stack.url, PHONE_390, has_touch=True, is_mobile=True) as page:
        sign_in(page, "kim")
        reply = listing(api, "kim", rated="all", sort="name-asc", page=1, limit=60)
        start, after = reply["images"][1]["image"], reply["images"][2]["image"]
        before = reply["images"][0]["image"]
        page.goto(f"/#/image/{start}?rated=all&sort=name-asc")
        page.wait_for_selector("#viewer-image")
        page.wait_for_function("() => document.querySelector('#viewer-image').complete")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE_390["width"]
        shoot(page, screenshots, "everyday-viewer-390")
        # The original file, as stored.
        href = page.locator("#open-original").get_attribute("href")
        assert href == f"getimage?image={start}"
        original = api.get(f"/{href}")
        assert original.status_code == 200 and hashlib.sha256(original.content).hexdigest() == start.split(".")[0]
        # Zoom: natural size in a scrollable stage; again to fit.
        page.click("#zoom")
        assert "zoomed" in page.locator("#stage").get_attribute("class")
        page.click("#zoom")
        assert "zoomed" not in page.locator("#stage").get_attribute("class")

        def swipe(dx: int) -> None:
            page.evaluate(
                """dx => {
                  const stage = document.querySelector('#stage');
                  const at = (x) => [new Touch({ identifier: 1, target: stage, clientX: x, clientY: 300 })];
                  const send = (type, touches, changed) =>
                    stage.dispatchEvent(new TouchEvent(type, { touches, changedTouches: changed, bubbles: true }));
                  send('touchstart', at(200), at(200));
                  send('touchend', [], at(200 + dx));
                }""",
                dx,
            )

        swipe(-150)  # to the left: the next image
        page.wait_for_function("n => location.hash.startsWith('#/image/' + n)", arg=after)
        page.wait_for_selector("#viewer-image")
        swipe(150)
        page.wait_for_function("n => location.hash.startsWith('#/image/' + n)", arg=start)
        page.wait_for_selector("#viewer-image")
        swipe(150)
        page.wait_for_function("n => location.hash.startsWith('#/image/' + n)", arg=before)
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "kim")
        page.goto(f"/#/image/{start}?rated=all&sort=name-asc")
        page.wait_for_selector("#viewer-image")
        page.keyboard.press("z")
        assert "zoomed" in page.locator("#stage").get_attribute("class")
        page.click("#fullscreen")
        page.wait_for_function("() => document.fullscreenElement && document.fullscreenElement.id === 'stage'")
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.fullscreenElement")


def test_upload_previews_and_toasts(browser, library, api, run_stack, tmp_path):
    good = [tmp_path / f"preview{i}.png" for i in range(2)]
    for i, path in enumerate(good):
        path.write_bytes(distinct_image("PNG", 7900 + i, (40, 30)))
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image at all")
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "kim")
        page.goto("/#/upload")
        page.set_input_files("#file-input", [str(p) for p in [*good, bad]])
        # Previews of the chosen files, before anything is sent (blob: URLs the policy allows).
        page.wait_for_function(
            "() => [...document.querySelectorAll('#file-list img.preview')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length === 2"
        )
        assert page.locator("#file-list li").count() == 3
        page.click("#start-upload")
        page.wait_for_selector(".toast:has-text('Uploaded 2 images.')")
        page.wait_for_selector(".toast.error:has-text('1 upload failed')")
    # 404: the first look at kim's rated list (kim never rates); 415: the file that is no image.
    assert set(page.recorder.statuses) <= {404, 415}


def test_dark_theme_follows_the_system_and_the_toggle(browser, library, run_stack, screenshots):
    background = "() => getComputedStyle(document.documentElement).backgroundColor"
    with ui_page(browser, run_stack.url, PHONE_390, color_scheme="dark") as page:
        sign_in(page, "kim")
        page.wait_for_selector("#grid .tile")
        assert page.evaluate(background) == "rgb(28, 32, 36)"  # --bg in the dark theme
        assert page.locator("#theme-toggle").get_attribute("aria-pressed") == "true"
        shoot(page, screenshots, "everyday-dark-390")
        page.click("#theme-toggle")  # light, kept across reloads
        assert page.evaluate(background) == "rgb(246, 247, 245)"
        page.reload()
        page.wait_for_selector("#grid .tile")
        assert page.evaluate(background) == "rgb(246, 247, 245)"
    with ui_page(browser, run_stack.url, DESKTOP, color_scheme="light") as page:
        sign_in(page, "kim")
        assert page.evaluate(background) == "rgb(246, 247, 245)"
        page.click("#theme-toggle")
        assert page.evaluate(background) == "rgb(28, 32, 36)"
        assert "(admin)" not in page.locator("#who").inner_text()  # access control off: nobody is


def test_a_service_error_recovers_once_the_service_is_back(browser, library, api, run_stack, screenshots):
    """The dataset service is killed while the supervisor is paused (so it
    stays down): the library shows the error with Retry; once the supervisor
    restarts the service, the page recovers by itself."""
    supervisor = run_stack.proc.pid
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "kim")
        page.wait_for_selector("#grid .tile")
        old = run_stack.pids()["dataset"]
        os.kill(supervisor, signal.SIGSTOP)
        try:
            os.kill(old, signal.SIGKILL)
            wait_for(lambda: api.get("/getuserdata", params={"user": RATER}).status_code >= 500, 30, "the outage")
            page.reload()
            page.wait_for_selector("#load-error")
            assert page.locator("#retry").is_visible()
            shoot(page, screenshots, "everyday-error-1280")
        finally:
            os.kill(supervisor, signal.SIGCONT)
        run_stack.wait_pid("dataset", not_pid=old)
        # No click: the page tries again by itself.
        page.wait_for_selector("#grid .tile", timeout=90_000)
        assert page.locator("#load-error").count() == 0
        # The outage's 5xx answers were expected here; nothing else may be a server error.
        page.recorder.statuses = [s for s in page.recorder.statuses if s not in (502, 503, 504)]


def test_an_album_of_more_than_a_page_has_numbered_pages(browser, library, api, run_stack):
    everything = names(listing(api, "kim", rated="all", sort="name-asc"))[:62]
    made = api.post("/albums", json={"user": RATER, "name": "Long", "images": ",".join(everything)})
    assert made.status_code in (200, 201), made.text
    album = made.json()["id"]
    with ui_page(browser, run_stack.url, PHONE_390) as page:
        sign_in(page, RATER)
        page.goto(f"/#/album/{album}")
        page.wait_for_selector("#album-page-info")
        assert page.locator("#album-page-info").inner_text() == "Page 1 of 2 · 62 images"
        assert page.locator("#album-top-page-info").is_visible()
        assert page.locator("#grid .tile").count() == 60
        page.locator(".pager").first.locator("a.num[data-page='2']").click()
        page.wait_for_function("() => document.querySelectorAll('#grid .tile').length === 2")
        assert [t.get_attribute("data-image") for t in page.locator("#grid .tile").all()] == everything[60:]
