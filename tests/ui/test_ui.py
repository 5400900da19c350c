"""The browser UI end to end: Debian's headless Chromium (Playwright) on the
page the gateway serves at ``/``, in front of the whole real system (``make
run``'s supervisor: gateway, dataset, tagger with EfficientNet-Lite0, rater,
trainer). Every flow checks what the page shows and what the REST API then
reports; every page must end without an uncaught error or console error.
Screenshots of each screen, at 360 px and 1280 px, go to tests/output/ui/."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from tests.trainer.scenes import rated_scenes
from tests.ui.pages import wait_for

from .conftest import UPLOAD_LIMIT, wait_for_tiles
from .pages import DESKTOP, PHONE, distinct_image, shoot, sign_in, ui_page

pytestmark = pytest.mark.slow

ALICE_IMAGES = 65  # more than one page of 60: paging and ←/→ across the boundary
LEVELS = [k / 6 for k in range(7)]
RANKS = ["F", "D", "C", "B", "A", "S", "SS"]  # the original's ranks, level k = rating k/6


@pytest.fixture(scope="module")
def api(run_stack):
    with httpx.Client(base_url=run_stack.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(api):
    """alice rated 65 images (every level); every image is tagged by the real tagger."""
    for i in range(ALICE_IMAGES):
        data = distinct_image("JPEG", 1000 + i, (96 + i % 7 * 8, 80))
        response = api.post(
            "/addrating",
            data={"user": "alice", "rating": str(round(LEVELS[i % 7], 6))},
            files={"image": (f"photo{i}.jpg", data)},
        )
        assert response.status_code == 200, response.text
    wait_for(lambda: api.get("/verifydatasets").json()["untagged_images"] == 0, what="the tagger")
    return api


def listing(api, user: str, **params) -> dict:
    response = api.get("/getuserdata", params={"user": user, **params})
    assert response.status_code == 200, response.text
    return response.json()


def rating_of(api, user: str, image: str) -> float | None:
    items = listing(api, user, rated="all", sort="name-asc")["images"]
    return next(i["rating"] for i in items if i["image"] == image)


def test_page_and_files_carry_a_strict_policy(run_stack):
    with httpx.Client(base_url=run_stack.url) as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "script-src 'self'" in policy and "'unsafe-inline'" not in policy
        assert "<script>" not in page.text and " on" not in page.text.split("<body>")[1].split(">")[0]
        for path in ("/ui/app.js", "/ui/app.css", "/ui/icon.svg", "/ui/lib/api.js", "/ui/screens/library.js"):
            asset = http.get(path)
            assert asset.status_code == 200, path
            assert asset.headers["content-security-policy"] == policy
            assert asset.headers["x-content-type-options"] == "nosniff"
        assert http.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
        assert http.get("/ui/nothing.js").status_code == 404
        assert http.get("/ui/../config.py").status_code == 404
        assert http.get("/ui/lib/../../routes/ui.py").status_code == 404
        assert http.get("/ui/index.html").status_code == 404  # the page is served at / only


def test_sign_in_library_paging_and_filters(browser, seeded, run_stack, screenshots):
    api = seeded
    with ui_page(browser, run_stack.url, PHONE) as page:
        page.goto("/")
        page.wait_for_selector("#user-name")
        shoot(page, screenshots, "signin-360")
        page.fill("#user-name", "not a name!")
        page.click("#signin-form button[type=submit]")
        assert page.locator("#user-name:invalid").count() == 1  # the browser's own check first
        page.fill("#user-name", "alice")
        page.press("#user-name", "Enter")
        page.wait_for_selector("#grid .tile img")
        assert page.locator("#who-name").inner_text().startswith("Signed in as alice")

        # The first page: 60 tiles, in the API's order, each with its rating.
        expected = listing(api, "alice", page=1, limit=60)
        tiles = page.locator("#grid .tile")
        assert tiles.count() == 60
        assert [tiles.nth(i).get_attribute("data-image") for i in range(60)] == [i["image"] for i in expected["images"]]
        first = expected["images"][0]
        badge = tiles.nth(0).locator(".badge.rank")
        assert badge.inner_text() == RANKS[round(first["rating"] * 6)]
        assert badge.get_attribute("title") == f"{RANKS[round(first['rating'] * 6)]} ({first['rating']:.2f})"
        assert page.locator("#page-info").inner_text() == f"Page 1 of 2 · {ALICE_IMAGES} images"
        # A function, not a bare expression: Playwright polls a bare expression with eval, which the policy forbids.
        page.wait_for_function(
            "() => [...document.querySelectorAll('#grid img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        overflow = page.evaluate("document.scrollingElement.scrollWidth")
        assert overflow <= PHONE["width"], f"the page is {overflow} px wide at {PHONE['width']} px"
        shoot(page, screenshots, "library-360")

        # Page 2 via the pager; the URL holds it, so a reload shows the same page.
        page.click("#page-next")
        page.wait_for_selector("#page-info:has-text('Page 2 of 2')")
        assert "page=2" in page.url
        page.reload()
        page.wait_for_selector("#page-info:has-text('Page 2 of 2')")
        assert page.locator("#grid .tile").count() == ALICE_IMAGES - 60

        # Sort and "rated" change the view (and the URL) at once.
        page.select_option("#sort", "rating-desc")
        page.wait_for_url("**sort=rating-desc**")
        wait_for_tiles(
            page, [i["image"] for i in listing(api, "alice", page=1, limit=60, sort="rating-desc")["images"]]
        )

        # Filter with autocomplete from /gettags, then exclude the tag with -tag.
        tags = api.get("/gettags", params={"user": "alice"}).json()
        assert tags["tags"], "the real tagger tagged nothing"
        tag = tags["tags"][tags["counts"].index(max(tags["counts"]))]
        page.fill("#filter", tag[:3])
        page.wait_for_function(
            "t => [...document.querySelectorAll('#tag-suggestions [role=option]')].some(o => o.dataset.tag === t)",
            arg=tag,
        )
        page.fill("#filter", tag)
        page.press("#filter", "Enter")
        page.wait_for_url(f"**filters={tag}**")
        with_tag = listing(api, "alice", page=1, limit=60, sort="rating-desc", filters=tag)
        assert with_tag["images"]
        # The previous view's tiles stay until the new listing arrives: wait
        # for the filtered ones, in the API's order.
        wait_for_tiles(page, [i["image"] for i in with_tag["images"]])
        page.fill("#filter", f"-{tag}")
        page.press("#filter", "Enter")
        page.wait_for_url("**filters=-**")
        without = listing(api, "alice", page=1, limit=60, sort="rating-desc", filters=f"-{tag}")
        if without["total"]:
            wait_for_tiles(page, [i["image"] for i in without["images"]])
        else:
            page.wait_for_selector(".empty:has-text('No images match')")
        assert with_tag["total"] + without["total"] == ALICE_IMAGES

        # A user who has not rated yet sees the library (every stored image, unrated).
        page.click("#switch-user")
        page.fill("#user-name", "newcomer")
        page.press("#user-name", "Enter")
        page.wait_for_url("**rated=all**")
        wait_for_tiles(page, [i["image"] for i in listing(api, "newcomer", page=1, limit=60, rated="all")["images"]])
        assert page.locator("#grid .badge.rank").count() == 0
        shoot(page, screenshots, "library-newcomer-360")
    assert page.recorder.statuses == [404, 404] or set(page.recorder.statuses) <= {404}


def test_viewer_rates_with_keys_and_clicks_and_crosses_pages(browser, seeded, run_stack, screenshots):
    api = seeded
    before = listing(api, "alice", sort="name-asc", page=1, limit=60)
    last_of_page_one = before["images"][59]["image"]
    first_of_page_two = listing(api, "alice", sort="name-asc", page=2, limit=60)["images"][0]["image"]
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "alice")
        page.goto("/#/library?sort=name-asc")
        page.wait_for_selector("#grid .tile")
        page.locator(f"#grid .tile[data-image='{last_of_page_one}'] a").click()
        page.wait_for_selector("#viewer-image")
        page.wait_for_function("() => document.querySelector('#viewer-image').complete")
        assert page.locator("#position").inner_text() == f"60 of {ALICE_IMAGES}"
        # The real tagger's tags with their scores, as /getimagetags lists them.
        tags = api.get("/getimagetags", params={"image": last_of_page_one, "scores": "true"}).json()
        assert tags["tagged"] is True
        page.wait_for_selector("#tags li")  # the one tag list (widgets/tagedit.js) loads them itself
        shown = [text.strip() for text in page.locator("#tags li.tag-model a").all_inner_texts()]
        assert shown == [f"{tag} {round(score * 100)}%" for tag, score in tags["tags"]]
        assert page.locator("#tags li.tag-model .tag-remove").count() == len(shown)  # each removable
        if not shown:
            assert page.locator("#tags").inner_text() == "No tags yet."
        shoot(page, screenshots, "viewer-1280")

        # Key 3 = the third level, 2/6: /getuserdata reports exactly that.
        page.keyboard.press("3")
        page.wait_for_selector("#viewer-message:has-text('Rated C.')")
        assert rating_of(api, "alice", last_of_page_one) == pytest.approx(2 / 6)
        assert page.locator(".level[data-level='3']").get_attribute("aria-pressed") == "true"
        assert page.locator(".level[data-level='3']").inner_text() == "C"
        assert page.locator("#my-rating").inner_text() == "C"
        assert page.locator("#my-rating").get_attribute("title") == "C (0.33)"
        page.wait_for_selector(".toast:has-text('Saved: C.')")
        # A click on the seventh level, SS: 1.
        page.click(".level[data-level='7']")
        page.wait_for_selector("#my-rating:text-is('SS')")
        assert rating_of(api, "alice", last_of_page_one) == 1.0

        # → goes past the page boundary to the first image of page 2, ← back.
        page.keyboard.press("ArrowRight")
        page.wait_for_selector(f"#position:text-is('61 of {ALICE_IMAGES}')")
        assert first_of_page_two in page.url
        page.keyboard.press("ArrowLeft")
        page.wait_for_selector(f"#position:text-is('60 of {ALICE_IMAGES}')")
        assert last_of_page_one in page.url

        # Remove the rating: the image leaves alice's rated list but stays stored.
        page.click("#remove-rating")
        page.wait_for_selector("#viewer-message:has-text('Rating removed')")
        assert last_of_page_one not in [i["image"] for i in listing(api, "alice", rated="yes")["images"]]
        assert rating_of(api, "alice", last_of_page_one) is None
        page.keyboard.press("5")  # rated again, from the keyboard
        page.wait_for_selector("#my-rating:text-is('A')")
        assert rating_of(api, "alice", last_of_page_one) == pytest.approx(4 / 6)

        # Delete (admin, with access control off everyone is): gone from the API.
        page.click("#delete-image")
        shoot(page, screenshots, "viewer-delete-1280")
        page.click("#confirm-delete")
        page.wait_for_function("n => !location.hash.includes(n)", arg=last_of_page_one)
        page.wait_for_selector("#viewer-image")
        assert api.get("/getimage", params={"image": last_of_page_one}).status_code == 404
        assert listing(api, "alice")["total"] == ALICE_IMAGES - 1

    with ui_page(browser, run_stack.url, PHONE) as page:
        sign_in(page, "alice")
        page.goto(f"/#/image/{first_of_page_two}?sort=name-asc")
        page.wait_for_selector("#viewer-image")
        page.wait_for_function("() => document.querySelector('#viewer-image').complete")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shoot(page, screenshots, "viewer-360")


def test_upload_with_progress_rating_and_plain_errors(browser, seeded, run_stack, screenshots, tmp_path):
    api = seeded
    good = [distinct_image("PNG", 5000 + i, (120, 90)) for i in range(3)]
    paths = []
    for i, data in enumerate(good):
        paths.append(tmp_path / f"holiday{i}.png")
        paths[-1].write_bytes(data)
    (tmp_path / "notes.png").write_bytes(b"this is a text file, not a picture\n" * 20)
    (tmp_path / "huge.bmp").write_bytes(b"BM" + bytes(UPLOAD_LIMIT + 1000))
    files = [*paths, tmp_path / "notes.png", tmp_path / "huge.bmp"]
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "bob")
        page.goto("/#/upload")
        page.set_input_files("#file-input", [str(p) for p in files])
        page.select_option("#batch-rating", "5")  # the sixth level: 5/6
        assert page.locator("#batch-status").inner_text() == "5 files ready."
        page.click("#start-upload")
        page.wait_for_selector("#see-uploads")
        shoot(page, screenshots, "upload-1280")
        rows = page.locator("#file-list li")
        states = [rows.nth(i).locator(".state").inner_text() for i in range(5)]
        assert states[:3] == ["Stored."] * 3
        assert states[3].startswith("Not an image tagrate can read: ")
        assert states[4].startswith("Too large: ")
        assert page.locator("#batch-progress").evaluate("e => e.value") == 1
        assert page.locator("#batch-status").inner_text() == "5 of 5 done · 100% · 2 failed"
        assert page.locator("#upload-done").inner_text().startswith("3 stored, 2 failed.")
    bob = listing(api, "bob")
    assert bob["total"] == 3 and [i["rating"] for i in bob["images"]] == pytest.approx([5 / 6] * 3)

    # Drag and drop without a rating: /addimage, the images land in "not rated".
    with ui_page(browser, run_stack.url, PHONE) as page:
        sign_in(page, "bob")
        page.goto("/#/upload")
        extra = distinct_image("JPEG", 6001, (100, 100))
        page.evaluate(
            """([bytes]) => {
                const transfer = new DataTransfer();
                transfer.items.add(new File([new Uint8Array(bytes)], "dropped.jpg", {type: "image/jpeg"}));
                const zone = document.querySelector("#drop-zone");
                const init = {dataTransfer: transfer, bubbles: true, cancelable: true};
                zone.dispatchEvent(new DragEvent("dragover", init));
                zone.dispatchEvent(new DragEvent("drop", init));
            }""",
            [list(extra)],
        )
        page.click("#start-upload")
        page.wait_for_selector("#see-uploads")
        assert page.locator("#file-list li .state").inner_text() == "Stored."
        shoot(page, screenshots, "upload-360")
        page.click("#see-uploads")
        page.wait_for_selector("#grid .tile")
        assert "rated=no" in page.url
    unrated = listing(api, "bob", rated="no")["images"]
    assert f"{hashlib.sha256(extra).hexdigest()}.jpg" in [i["image"] for i in unrated]
    assert listing(api, "bob")["total"] == 3


def test_my_model_trains_with_live_progress(browser, seeded, run_stack, screenshots):
    api = seeded
    scenes = rated_scenes(40, seed=21)
    for png, _, rating in scenes:
        response = api.post(
            "/addrating", data={"user": "carol", "rating": str(rating)}, files={"image": ("s.png", png)}
        )
        assert response.status_code == 200, response.text
    stats = api.get("/getstats", params={"user": "carol"}).json()
    wait_for(lambda: api.get("/verifydatasets").json()["work"]["embed"]["pending"] == 0, what="the rater's features")
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "carol")
        page.goto("/#/model")
        page.wait_for_selector("#histogram")
        bars = page.locator("#histogram .bar .count")
        assert [int(bars.nth(k).inner_text()) for k in range(7)] == stats["rating_distribution"]
        assert page.locator("#rating-count").inner_text() == "40 rated images."
        assert page.locator("#model-state").inner_text().startswith("No model yet")
        shoot(page, screenshots, "model-empty-1280")

        page.click("#train")
        page.wait_for_selector("#train-state:has-text('Training')")
        seen: list[str] = []
        deadline = time.monotonic() + 240
        while "finished" not in (text := page.locator("#train-state").inner_text()):
            if not seen or seen[-1] != text:
                seen.append(text)
            assert time.monotonic() < deadline, f"training never finished: {text}"
            assert "failed" not in text, text
            time.sleep(0.1)
        assert any(t.startswith("Training your model: ") and "%" in t for t in seen), seen
        # One overall progress that never goes back (no per-phase epochs).
        shown = [int(t.split(": ")[1].split("%")[0]) for t in seen if t.startswith("Training your model: ")]
        assert shown == sorted(shown) and not any("epoch" in t for t in seen), seen
        page.wait_for_selector("#model-metrics")
        assert page.locator("#model-state").inner_text().startswith("Up to date")
        assert page.locator("#stop-training").is_hidden()  # only while a training runs
        metrics = api.get("/getstats", params={"user": "carol"}).json()["model"]["metrics"]
        cells = page.locator("#model-metrics tbody tr").first.locator("td")
        assert cells.nth(0).inner_text() == f"{metrics['spearman']:.2f}"
        assert cells.nth(1).inner_text() == f"{metrics['mean_spearman']:.2f}"
        shoot(page, screenshots, "model-1280")

        # Already up to date: a plain sentence, not the API's text ("...pass force=true").
        refusal = api.post("/trainuser", data={"user": "carol"})
        assert refusal.status_code == 409, refusal.text
        page.click("#train")
        page.wait_for_selector("#train-state:has-text('already up to date')")
        text = page.locator("#train-state").inner_text()
        assert "all 40 of your ratings" in text and "force" not in text and "null" not in page.inner_text("main")
    after = api.get("/getstats", params={"user": "carol"}).json()
    assert after["RaterNNP_up_to_date"] is True and after["model"]["trained_on_ratings"] == 40
    assert 409 in page.recorder.statuses

    with ui_page(browser, run_stack.url, PHONE) as page:
        sign_in(page, "carol")
        page.goto("/#/model")
        page.wait_for_selector("#model-metrics")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shoot(page, screenshots, "model-360")


def test_admin_users_work_and_retag(browser, seeded, run_stack, screenshots):
    api = seeded
    with ui_page(browser, run_stack.url, DESKTOP) as page:
        sign_in(page, "alice")
        page.click("#nav-admin")
        page.wait_for_selector("#user-table")
        users = [u["user"] for u in api.get("/verifydatasets").json()["users"]]
        shown = page.locator("#user-table tbody tr td:first-child").all_inner_texts()
        assert shown == users and "alice" in shown
        # Access control is off: no tokens offered, and nobody is "(admin)".
        page.wait_for_selector("#tokens #access-off")
        assert page.locator("#token-form").count() == 0
        assert "(admin)" not in page.locator("#who").inner_text()
        page.click("#retag")
        page.wait_for_selector("#retag-message:has-text(' with ')")
        assert page.locator("#retag-message").inner_text().startswith("Tagged 0 images with ")
        assert page.locator("#untagged").inner_text().startswith("0 untagged images.")
        shoot(page, screenshots, "admin-1280")
    with ui_page(browser, run_stack.url, PHONE) as page:
        sign_in(page, "alice")
        page.goto("/#/admin")
        page.wait_for_selector("#user-table")
        shoot(page, screenshots, "admin-360")
