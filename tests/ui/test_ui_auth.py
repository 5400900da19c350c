"""The browser UI with access control on: Debian's headless Chromium
(Playwright) in front of the whole real system (``make run``'s supervisor)
started with ``GATEWAY_AUTH=on`` and a random ``GATEWAY_ADMIN_TOKEN``.

Signing in with a token leaves the secret only in the HttpOnly session
cookie; the admin creates and revokes tokens on the Admin screen; a user
token rates in the viewer as that user and nothing more (a forged admin
call from the page is a 403); the "For you" sort shows the predictions of a
real training in the API's order; an admin stops a running training. Every
page must end without an uncaught error or console error."""

from __future__ import annotations

import secrets

import httpx
import pytest

from tests.imagefactory import make_image
from tests.trainer.scenes import rated_scenes
from tests.ui.pages import wait_for

from .conftest import start_run_stack, wait_for_tiles
from .pages import DESKTOP, PHONE, shoot, ui_page

pytestmark = pytest.mark.slow

ADMIN_TOKEN = secrets.token_urlsafe(32)
DAVE_RATINGS = 40
UNRATED = 12
WRONG = "That token is not valid (or has expired or been revoked)."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def auth_stack(browser, tmp_path_factory):
    """The whole system with access control on. The trainer's MLP runs its
    full 400 epochs (no early stop), so a training lasts long enough to be
    stopped from the page on a busy machine, and still ends in seconds."""
    stack = start_run_stack(
        tmp_path_factory.mktemp("ui-auth-stack"),
        {
            "GATEWAY_AUTH": "on",
            "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            # The test's own wrong-token attempts must not lock the browser out.
            "GATEWAY_AUTH_FAILURES_PER_MINUTE": "1000",
            "TRAINER_MAX_EPOCHS": "400",
            "TRAINER_PATIENCE": "400",
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
def admin_api(auth_stack):
    with httpx.Client(base_url=auth_stack.url, timeout=60, headers=bearer(ADMIN_TOKEN)) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(admin_api):
    """dave rated 40 scenes (a learnable taste), erin one image; 12 more
    images nobody rated; every image tagged and its features cached."""
    for png, _, rating in rated_scenes(DAVE_RATINGS, seed=21):
        response = admin_api.post(
            "/addrating", data={"user": "dave", "rating": str(rating)}, files={"image": ("s.png", png)}
        )
        assert response.status_code == 200, response.text
    # A user exists from their first rating: erin's lets her browse what she has not rated.
    erin_first = make_image("JPEG", (90, 90), seed=2999)
    response = admin_api.post(
        "/addrating", data={"user": "erin", "rating": "0.5"}, files={"image": ("e.jpg", erin_first)}
    )
    assert response.status_code == 200, response.text
    for i in range(UNRATED):
        data = make_image("JPEG", (96 + i * 4, 80), seed=3000 + i)
        response = admin_api.post("/addimage", files={"image": (f"new{i}.jpg", data)})
        assert response.status_code == 200, response.text

    def drained() -> bool:
        state = admin_api.get("/verifydatasets").json()
        return state["untagged_images"] == 0 and state["work"]["embed"]["pending"] == 0

    wait_for(drained, what="the tagger and the rater's features")
    return admin_api


def new_token(admin_api, user: str) -> dict:
    response = admin_api.post("/tokens", json={"user": user})
    assert response.status_code == 200, response.text
    return response.json()


def sign_in_with(page, token: str) -> None:
    page.goto("/")
    page.fill("#token", token)
    page.click("#signin-form button[type=submit]")


def assert_secret_only_in_cookie(page, token: str) -> None:
    """The token is in no script-visible place: not document.cookie (the
    session cookie is HttpOnly), not web storage, not the URL."""
    assert token not in page.evaluate("document.cookie")
    storage = page.evaluate("JSON.stringify([{...localStorage}, {...sessionStorage}])")
    assert token not in storage, storage
    assert token not in page.url
    cookies = {c["name"]: c for c in page.context.cookies()}
    session = cookies["tagrate_session"]
    assert session["httpOnly"] is True and session["sameSite"] == "Strict"


def forged(page, path: str, fields: dict[str, str]) -> tuple[int, str]:
    """A POST the page's own script makes with the session cookie."""
    return page.evaluate(
        """async ([path, fields]) => {
            const r = await fetch(path, {method: "POST", body: new URLSearchParams(fields)});
            return [r.status, await r.text()];
        }""",
        [path, fields],
    )


def test_admin_signs_in_manages_tokens_and_a_user_rates_as_themselves(browser, seeded, auth_stack, screenshots):
    api = seeded
    frank = new_token(api, "frank")
    with ui_page(browser, auth_stack.url, DESKTOP) as frank_page:
        # frank signs in now; his token is revoked on the Admin screen below.
        sign_in_with(frank_page, frank["token"])
        frank_page.wait_for_selector("#who-name:text-is('Signed in as frank')")

        with ui_page(browser, auth_stack.url, DESKTOP) as page:
            page.goto("/")
            page.wait_for_selector("#token")
            assert page.locator("#user-name").count() == 0  # no user picker with access control on
            shoot(page, screenshots, "auth-signin-1280")

            # A wrong token: a plain sentence, still on the sign-in screen, no cookie.
            page.fill("#token", "tr_" + secrets.token_urlsafe(32))
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector(f"#signin-error:text-is('{WRONG}')")
            assert page.context.cookies() == []
            shoot(page, screenshots, "auth-signin-wrong-1280")

            # The admin token: whose data to show, then the library of that user.
            page.fill("#token", ADMIN_TOKEN)
            page.click("#signin-form button[type=submit]")
            page.wait_for_selector("#user-name")
            assert page.locator("#token").count() == 0
            page.fill("#user-name", "dave")
            page.press("#user-name", "Enter")
            page.wait_for_selector("#grid .tile")
            assert page.locator("#who-name").inner_text() == "Signed in as dave (admin)"
            assert_secret_only_in_cookie(page, ADMIN_TOKEN)

            # Admin screen: create a token for erin, shown once.
            page.click("#nav-admin")
            page.wait_for_selector("#token-table")
            page.fill("#token-user", "erin")
            page.click("#token-form button[type=submit]")
            page.wait_for_selector("#token-secret")
            erin = page.locator("#token-secret").inner_text()
            assert erin.startswith("tr_")
            assert "shown only once" in page.locator("#tokens").inner_text()
            who = httpx.get(f"{auth_stack.url}/whoami", headers=bearer(erin))
            assert who.json() == {"auth": True, "user": "erin", "admin": False}
            listed = api.get("/tokens").json()["tokens"]
            erin_id = next(t["id"] for t in listed if t["user"] == "erin")
            rows = page.locator("#token-table tbody tr td:first-child").all_inner_texts()
            assert sorted(rows) == sorted(t["id"] for t in listed)
            shoot(page, screenshots, "auth-admin-1280")

            # Revoke frank's token: gone from the list, refused by the API at once.
            page.click(f"button[aria-label='Revoke token {frank['id']}']")
            page.wait_for_function(
                "id => ![...document.querySelectorAll('#token-table td:first-child')].some(c => c.textContent === id)",
                arg=frank["id"],
            )
            assert frank["id"] not in [t["id"] for t in api.get("/tokens").json()["tokens"]]
            assert httpx.get(f"{auth_stack.url}/whoami", headers=bearer(frank["token"])).status_code == 401

            # The secret is shown once: a fresh Admin screen lists erin's token, not its secret.
            page.reload()
            page.wait_for_selector("#token-table")
            assert erin_id in page.locator("#token-table").inner_text()
            assert erin not in page.content()

            # Sign out: the cookie is gone and the page asks for a token again.
            page.click("#sign-out")
            page.wait_for_selector("#token")
            assert page.context.cookies() == []
            assert page.evaluate("async () => (await fetch('whoami')).status") == 401

            # Sign in as erin: no Admin, no user switching; the admin screen says why.
            page.fill("#token", erin)
            page.press("#token", "Enter")
            page.wait_for_selector("#who-name:text-is('Signed in as erin')")
            assert_secret_only_in_cookie(page, erin)
            assert page.locator("#nav-admin").is_hidden()
            assert page.locator("#switch-user").count() == 0
            page.goto("/#/admin")
            page.wait_for_selector("#main .error:has-text('This screen needs an admin token.')")
            assert page.locator("#token-form").count() == 0

            # Forged admin and foreign-user calls from erin's page: 403, nothing changes.
            victim = api.get("/getuserdata", params={"user": "dave", "limit": 1, "page": 1}).json()["images"][0]
            status, body = forged(page, "deleteimage", {"image": victim["image"]})
            assert status == 403 and "admin" in body
            status, _ = forged(page, "tokens", {"admin": "true"})
            assert status == 403
            status, _ = forged(page, "updaterating", {"image": victim["image"], "user": "dave", "rating": "0"})
            assert status == 403
            assert api.get("/getimage", params={"image": victim["image"]}).status_code == 200
            dave_now = api.get("/getuserdata", params={"user": "dave", "limit": 1, "page": 1}).json()["images"][0]
            assert dave_now["rating"] == victim["rating"]

            # erin rates in the viewer: key 5 (4/6), then a click on level 2 (1/6).
            page.goto("/#/library?rated=no&sort=name-asc")
            page.wait_for_selector("#grid .tile")
            first = page.locator("#grid .tile").first.get_attribute("data-image")
            page.locator("#grid .tile a").first.click()
            page.wait_for_selector("#viewer-image")
            assert page.locator("#delete-image").count() == 0  # delete is admin-only
            page.keyboard.press("5")
            page.wait_for_selector("#viewer-message:has-text('Rated A.')")

            def erin_rating() -> float | None:
                response = httpx.get(f"{auth_stack.url}/getuserdata", params={"rated": "all"}, headers=bearer(erin))
                assert response.status_code == 200, response.text
                return next(i["rating"] for i in response.json()["images"] if i["image"] == first)

            assert erin_rating() == pytest.approx(4 / 6)
            page.click(".level[data-level='2']")
            page.wait_for_selector("#my-rating:text-is('D')")
            assert erin_rating() == pytest.approx(1 / 6)
            shoot(page, screenshots, "auth-viewer-user-1280")
        # The wrong token (401), the probe of whoami signed out (401), the forged calls (403).
        assert set(page.recorder.statuses) <= {401, 403, 404}

        # frank's page meets the revocation at its next request: back to sign-in.
        frank_page.goto("/#/library?rated=all")
        frank_page.wait_for_selector("#token")
        assert frank_page.locator("#nav").is_hidden()
    assert set(frank_page.recorder.statuses) <= {401, 404}


def train_dave(api) -> None:
    response = api.post("/trainuser", data={"user": "dave"})
    assert response.status_code == 202, response.text
    status = wait_for(
        lambda: (s := api.get("/trainerstatus").json()["status"])["is_training"] is False and s,
        timeout=300,
        what="dave's training",
    )
    assert status["last_job"]["user"] == "dave" and status["last_job"]["outcome"] == "succeeded", status


def test_admin_stops_a_training_and_for_you_shows_the_predictions(browser, seeded, auth_stack, screenshots):
    api = seeded
    dave = new_token(api, "dave")["token"]
    with ui_page(browser, auth_stack.url, DESKTOP) as admin, ui_page(browser, auth_stack.url, DESKTOP) as page:
        sign_in_with(page, dave)
        page.wait_for_selector("#who-name:text-is('Signed in as dave')")
        page.goto("/#/model")
        page.wait_for_selector("#model-state")
        assert page.locator("#model-state").inner_text().startswith("No model yet")

        # The admin (acting as dave) starts dave's training and stops it.
        sign_in_with(admin, ADMIN_TOKEN)
        admin.fill("#user-name", "dave")
        admin.press("#user-name", "Enter")
        admin.wait_for_selector("#who-name")
        admin.goto("/#/model")
        admin.wait_for_selector("#model-state")
        admin.click("#train")
        admin.wait_for_selector("#train-state:has-text('Training your model: ')")
        # dave sees his training run, without a Stop button (/stoptraining is admin-only).
        page.reload()
        page.wait_for_selector("#train-state:has-text('Training your model: ')")
        assert page.locator("#stop-training").is_hidden()
        assert admin.locator("#stop-training").is_visible()
        admin.click("#stop-training")
        admin.wait_for_selector("#train-state:has-text('Training stopped')", timeout=60_000)
        last = api.get("/trainerstatus").json()["status"]["last_job"]
        assert last["user"] == "dave" and last["outcome"] == "stopped", last
        assert api.get("/getstats", params={"user": "dave"}).json()["model"] is None

        # A full training through the API; the page sorts by prediction.
        train_dave(api)
        wait_for(lambda: api.get("/verifydatasets").json()["pending_predictions"] == 0, what="the predictions")
        page.goto("/#/library")
        page.wait_for_selector("#grid .tile")
        page.select_option("#rated", "no")
        page.wait_for_url("**rated=no**")
        page.select_option("#sort", "predicted-desc")
        page.wait_for_url("**sort=predicted-desc**")
        expected = httpx.get(
            f"{auth_stack.url}/getuserdata",
            params={"rated": "no", "sort": "predicted-desc", "page": 1, "limit": 60},
            headers=bearer(dave),
        ).json()["images"]
        assert len(expected) >= UNRATED and all(i["predicted"] is not None for i in expected)
        # The grid in exactly the API's order.
        wait_for_tiles(page, [i["image"] for i in expected])
        badges = page.locator("#grid .tile .badge.pred").all_inner_texts()
        ranks = ["F", "D", "C", "B", "A", "S", "SS"]
        assert badges == [f"≈ {ranks[int(i['predicted'] * 6 + 0.5)]}" for i in expected]  # JS Math.round
        shoot(page, screenshots, "auth-for-you-1280")
    # 401: the first /whoami of a page not signed in yet; 404: users without ratings, as in test_ui.
    assert set(admin.recorder.statuses) <= {401, 404} and set(page.recorder.statuses) <= {401, 404}

    with ui_page(browser, auth_stack.url, PHONE) as page:
        sign_in_with(page, dave)
        page.wait_for_selector("#who-name")
        page.goto("/#/library?rated=no&sort=predicted-desc")
        page.wait_for_selector("#grid .tile .badge.pred")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
        shoot(page, screenshots, "auth-for-you-360")
