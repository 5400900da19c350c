"""Access control end to end: a real dataset service (SQLite and PostgreSQL)
behind a real gateway with GATEWAY_AUTH=on.

The matrix is built from the app's own routes: every route must declare one
access rule and have a request below, so a new route cannot escape it. Each
route is called as {no credentials, wrong token, revoked token, expired
token, a user token for another user, a user token for the named user,
admin}; every refusal has its exact status and leaves the stored state as it
was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network

import httpx
import pytest
from sqlalchemy import create_engine, text

from tagrate_gateway.auth import SESSION_COOKIE, Access, ProxyTrust, api_routes, route_access
from tests.imagefactory import make_image

from .stack import Stack, start_stack, stored_name

ADMIN_TOKEN = "admin-bootstrap-token-for-the-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NEW_IMAGE = make_image("JPEG", (40, 40), seed=901)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Tokens:
    alice: str
    bob: str
    revoked: str
    expired: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(request, tmp_path_factory, make_pg_database) -> Iterator[tuple[Stack, Tokens, str]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'tagrate.db'}"
    else:
        url = make_pg_database()
    stack = start_stack(
        url,
        tmp_path_factory.mktemp("data"),
        auth="on",
        admin_token=ADMIN_TOKEN,
        auth_failures_per_minute=100_000,
        auth_cache_seconds=0.5,
    )
    try:
        with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
            for user, seed, rating in [("alice", 11, "0.7"), ("bob", 13, "0.5")]:
                data = make_image("JPEG", (48, 40), seed=seed)
                response = http.post(
                    "/addrating", data={"user": user, "rating": rating}, files={"image": ("a.jpg", data)}
                )
                assert response.status_code == 200, response.text
                stack.names[user] = stored_name(data, "jpg")

            def make(**body: object) -> dict:
                response = http.post("/tokens", json=body)
                assert response.status_code == 200, response.text
                return response.json()

            # Two albums of alice's: one for the matrix's album routes, one its DELETE removes.
            for key in ("album", "album_to_delete"):
                made = http.post("/albums", data={"user": "alice", "images": stack.names["alice"]})
                assert made.status_code == 201, made.text
                stack.names[key] = str(made.json()["id"])
            alice, bob = make(user="alice"), make(user="bob")
            revoked, expired = make(user="alice"), make(user="alice", expires_in=1)
            assert http.delete(f"/tokens/{revoked['id']}").status_code == 200
            time.sleep(1.2)
            yield stack, Tokens(alice["token"], bob["token"], revoked["token"], expired["token"]), url
    finally:
        stack.stop()


def _state(stack: Stack) -> tuple:
    with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
        return stack.state(http, ("alice", "bob")), http.get("/tokens").json()


def _request(stack: Stack, route: tuple[str, str], tokens: Tokens) -> dict:
    """The request each route gets in the matrix, acting on alice where it names a user."""
    alice_image = stack.names["alice"]
    jpeg = ("x.jpg", NEW_IMAGE, "image/jpeg")
    requests: dict[tuple[str, str], dict] = {
        ("GET", "/getimage"): {"params": {"image": alice_image}},
        ("GET", "/getthumbnail"): {"params": {"image": alice_image}},
        ("GET", "/getimagetags"): {"params": {"image": alice_image}},
        ("GET", "/getuserdata"): {"params": {"user": "alice"}},
        ("POST", "/addrating"): {"data": {"user": "alice", "rating": "0.3"}, "files": {"image": jpeg}},
        ("POST", "/updaterating"): {"json": {"filename": alice_image, "user": "alice", "rating": 0.9}},
        ("GET", "/removerating"): {"params": {"user": "alice", "image": alice_image}},
        ("POST", "/removerating"): {"data": {"user": "alice", "image": alice_image}},
        ("GET", "/deleteimage"): {"params": {"image": alice_image}},
        ("POST", "/deleteimage"): {"data": {"image": alice_image}},
        ("POST", "/addimage"): {"files": {"image": jpeg}},
        ("GET", "/gettags"): {"params": {"user": "alice"}},
        ("GET", "/getstats"): {"params": {"user": "alice"}},
        ("GET", "/getimageneighbours"): {"params": {"user": "alice", "image": alice_image}},
        ("GET", "/verifydatasets"): {},
        ("POST", "/retryfailed"): {},
        ("GET", "/updatetags"): {},
        ("POST", "/updatetags"): {},
        ("POST", "/tag"): {"files": {"image": jpeg}},
        ("POST", "/tagbulk"): {"files": [("images", jpeg)]},
        ("POST", "/rate"): {"data": {"user": "alice"}, "files": {"image": jpeg}},
        ("POST", "/ratebulk"): {"data": {"user": "alice"}, "files": [("images", jpeg)]},
        ("GET", "/trainuser"): {"params": {"user": "alice"}},
        ("POST", "/trainuser"): {"data": {"user": "alice"}},
        ("GET", "/trainerstatus"): {},
        ("GET", "/stoptraining"): {},
        ("POST", "/stoptraining"): {},
        ("GET", "/metrics"): {},
        ("GET", "/healthz"): {},
        ("GET", "/readyz"): {},
        ("POST", "/login"): {"json": {"token": tokens.alice}},
        ("POST", "/logout"): {},
        ("GET", "/whoami"): {},
        ("POST", "/tokens"): {"json": {"user": "carol"}},
        ("GET", "/tokens"): {},
        ("DELETE", "/tokens/{token_id}"): {"path": "/tokens/0123456789abcdef"},
    }
    album, doomed = f"/albums/{stack.names['album']}", f"/albums/{stack.names['album_to_delete']}"
    requests |= {
        ("POST", "/createmontagepost"): {"data": {"user": "alice", "filenames": alice_image}},
        ("GET", "/getmontageposts"): {"params": {"user": "alice"}},
        ("GET", "/getmontagepost"): {"params": {"id": stack.names["album"]}},
        ("GET", "/getmontagepostneighbours"): {"params": {"id": stack.names["album"], "user": "alice"}},
        ("GET", "/albums"): {"params": {"user": "alice"}},
        ("POST", "/albums"): {"data": {"user": "alice", "images": alice_image}},
        ("GET", "/albums/{id}"): {"path": album},
        ("PATCH", "/albums/{id}"): {"path": album, "json": {"name": "renamed"}},
        ("DELETE", "/albums/{id}"): {"path": doomed},
        ("POST", "/albums/{id}/images"): {"path": f"{album}/images", "data": {"images": alice_image}},
        ("DELETE", "/albums/{id}/images/{image}"): {"path": f"{album}/images/{alice_image}"},
        ("PATCH", "/albums/{id}/images/{image}"): {"path": f"{album}/images/{alice_image}", "json": {"position": 1}},
        ("GET", "/trainall"): {},
        ("POST", "/trainall"): {},
        ("GET", "/verifyfulldataset"): {},
        ("GET", "/createfulldataset"): {},
    }
    tagged = {"image": alice_image, "tags": ["matrix_tag"]}
    requests |= {
        ("POST", "/addtags"): {"json": tagged},
        ("POST", "/removetags"): {"json": tagged},
        ("GET", "/tagaliases"): {},
        ("POST", "/tagaliases"): {"json": {"alias": "matrix_kitty", "tag": "matrix_cat"}},
        ("DELETE", "/tagaliases/{alias}"): {"path": "/tagaliases/matrix_kitty"},
        ("GET", "/tagimplications"): {},
        ("POST", "/tagimplications"): {"json": {"tag": "matrix_cat", "implies": "matrix_animal"}},
        ("DELETE", "/tagimplications/{tag}/{implies}"): {"path": "/tagimplications/matrix_cat/matrix_animal"},
        ("GET", "/taughttags"): {},
        ("GET", "/getsimilar"): {"params": {"image": alice_image, "user": "alice"}},
        ("POST", "/getsimilar"): {"data": {"user": "alice"}, "files": {"image": jpeg}},
        ("GET", "/getduplicates"): {},
        ("POST", "/resolveduplicates"): {"json": {"not_duplicates": [alice_image, stack.names["bob"]]}},
        ("GET", "/getratenext"): {"params": {"user": "alice"}},
        ("GET", "/explain"): {"params": {"user": "alice", "image": alice_image}},
        ("GET", "/getmodels"): {"params": {"user": "alice"}},
        ("POST", "/usemodel"): {"params": {"user": "alice", "version": "no-such-version"}},
        ("GET", "/taggermodels"): {},
        ("POST", "/taggermodels"): {"data": {"path": "/no/such/model-folder"}},
        ("POST", "/taggermodels/use"): {"data": {"model": "no-such-model"}},
    }
    assert route in requests, f"{route} has no request in the access matrix: add one (and its rule)"
    return requests[route]


def _rules(app) -> dict[tuple[str, str], Access]:
    """Every API route's one access rule; a route without one fails here."""
    rules: dict[tuple[str, str], Access] = {}
    for route in api_routes(app.routes):
        access = route_access(route)
        if not route.include_in_schema and not access:
            continue  # the docs and browser UI's static pages: public by design
        assert len(access) == 1, f"{sorted(route.methods)} {route.path} must declare exactly one Access rule"
        for method in route.methods:
            rules[(method, route.path)] = access[0]
    operations = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    assert operations <= set(rules), f"operations without an access rule: {sorted(operations - set(rules))}"
    return rules


def test_every_route_by_every_caller(stack) -> None:
    stack, tokens, _ = stack
    app = stack.gateway.app
    rules = _rules(app)
    assert {m for m, _ in rules} <= {"GET", "POST", "DELETE", "PATCH"}
    callers = {
        "none": {},
        "wrong": bearer("tr_not-a-token-at-all-0000000000000000"),
        "revoked": bearer(tokens.revoked),
        "expired": bearer(tokens.expired),
        "other user": bearer(tokens.bob),
        "itself": bearer(tokens.alice),
        "admin": ADMIN,
    }
    # Destructive routes last, so the image the others name still exists.
    order = sorted(rules, key=lambda r: (r[1] == "/deleteimage", r[1].startswith("/tokens"), r))
    # The state a refused request must leave as it was: taken again only after
    # an allowed request (which may change it); after a refusal it is the
    # state just checked, so the next refusal's "before" is that one.
    known: tuple | None = None
    with httpx.Client(base_url=stack.url, timeout=60) as http:
        for route in order:
            rule = rules[route]
            method, path = route
            spec = dict(_request(stack, route, tokens))
            url = spec.pop("path", path)
            for who, headers in callers.items():
                if rule.scope == "public":
                    expected = None
                elif who in ("none", "wrong", "revoked", "expired"):
                    expected = 401
                elif (rule.scope == "admin" and who != "admin") or (rule.scope == "user" and who == "other user"):
                    expected = 403
                else:
                    expected = None  # allowed: whatever the route answers, never 401/403
                before = (known if known is not None else _state(stack)) if expected else None
                response = http.request(method, url, headers=headers, **spec)
                if expected:
                    assert response.status_code == expected, (route, who, response.text)
                    body = response.json()
                    assert body["code"] == ("unauthorized" if expected == 401 else "forbidden"), (route, who)
                    known = _state(stack)
                    assert known == before, f"{route} refused for {who} but changed something"
                else:
                    known = None
                    assert response.status_code not in (401, 403, 429), (route, who, response.text)


def test_public_routes_need_no_credentials(stack) -> None:
    stack, _, _ = stack
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code in (200, 503)
        assert http.get("/openapi.json").status_code == 200
        assert http.get("/whoami").status_code == 401
        assert http.get("/whoami").json() == {
            "error": "this endpoint needs credentials: 'Authorization: Bearer <token>' or a login session",
            "code": "unauthorized",
        }


def test_user_defaults_to_the_caller_and_all_is_admin_only(stack) -> None:
    stack, tokens, _ = stack
    with httpx.Client(base_url=stack.url, timeout=30, headers=bearer(tokens.bob)) as http:
        mine = http.get("/getuserdata")
        assert mine.status_code == 200 and mine.json()["user"] == "bob"
        assert http.get("/getstats").json()["user"] == "bob"
        assert http.get("/trainuser", params={"user": "all"}).status_code == 403
        assert http.post("/rate", data={"user": "all"}, files={"image": ("x.jpg", NEW_IMAGE)}).status_code == 403
        # /ratebulk's user defaults to all, but for a user token to the caller (then: no rater: 503).
        assert http.post("/ratebulk", files=[("images", ("x.jpg", NEW_IMAGE))]).status_code == 503
        who = http.get("/whoami").json()
        assert who == {"auth": True, "user": "bob", "admin": False}
    with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
        assert http.get("/whoami").json() == {"auth": True, "user": None, "admin": True}
        assert http.get("/getuserdata").status_code == 400  # admin must name the user


def test_original_clients_with_a_token(stack) -> None:
    """The web front end's JSON /updaterating and the chat bot's form
    /addrating and GET /trainuser, each with a token in Authorization."""
    stack, tokens, _ = stack
    with httpx.Client(base_url=stack.url, timeout=30, headers=bearer(tokens.alice)) as http:
        image = make_image("PNG", seed=77)
        added = http.post("/addrating", data={"user": "alice", "rating": ".25"}, files={"image": ("p.png", image)})
        assert added.status_code == 200, added.text
        name = added.json()["image"]
        updated = http.post("/updaterating", json={"filename": name, "user": "alice", "rating": "0.5"})
        assert updated.status_code == 200 and updated.json()["previous_rating"] == 0.25
        assert http.get("/trainuser", params={"user": "alice"}).status_code == 503  # no trainer here: not refused
        assert http.get("/removerating", params={"user": "alice", "image": name}).status_code == 200


def test_cookie_sessions_refuse_cross_site_changes(stack) -> None:
    stack, tokens, _ = stack
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        assert http.post("/login", json={"token": "wrong-token-xxxxxxxxxxxxxxxx"}).status_code == 401
        login = http.post("/login", data={"token": tokens.alice})
        assert login.status_code == 200, login.text
        assert login.json() == {"user": "alice", "admin": False, "expires_at": None}
        cookie = login.headers["set-cookie"].lower()
        assert f"{SESSION_COOKIE}=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
        assert "path=/" in cookie and "secure" not in cookie
        assert http.get("/whoami").json() == {"auth": True, "user": "alice", "admin": False}
        assert http.get("/getuserdata").status_code == 200

        # An image of alice's own (the matrix may have deleted the seeded one).
        data = make_image("JPEG", (30, 30), seed=555)
        added = http.post(
            "/addrating", data={"user": "alice", "rating": "0.4"}, files={"image": ("c.jpg", data)}, headers=ADMIN
        )
        assert added.status_code == 200, added.text
        image = added.json()["image"]
        before = _state(stack)
        body = {"filename": image, "user": "alice", "rating": 0.01}
        evil = http.post("/updaterating", json=body, headers={"Origin": "http://evil.example"})
        assert evil.status_code == 403 and evil.json()["code"] == "forbidden"
        assert http.post("/updaterating", json=body).status_code == 403  # no Origin: cannot tell
        cross = http.post("/updaterating", json=body, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403
        # State-changing GETs never through a cookie alone.
        assert http.get("/removerating", params={"image": image}).status_code == 403
        assert http.get("/trainuser").status_code == 403
        assert _state(stack) == before
        # Same origin: allowed.
        same = http.post("/updaterating", json=body, headers={"Origin": stack.url})
        assert same.status_code == 200, same.text
        # A cross-site page cannot log a visitor in either.
        forged = http.post("/login", data={"token": tokens.bob}, headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403

        out = http.post("/logout")
        assert out.status_code == 200 and f"{SESSION_COOKIE}=" in out.headers["set-cookie"]
        assert http.get("/whoami").status_code == 401


def test_login_cookie_is_secure_behind_https(stack) -> None:
    stack, tokens, _ = stack
    https = {"X-Forwarded-Proto": "https"}
    with httpx.Client(base_url=stack.url, timeout=30) as http:
        # From a peer that is no trusted proxy the header is ignored.
        login = http.post("/login", json={"token": tokens.alice}, headers=https)
        assert login.status_code == 200 and "secure" not in login.headers["set-cookie"].lower()
        app = stack.gateway.app
        before = app.state.proxies
        app.state.proxies = ProxyTrust((ip_network("127.0.0.1/32"),))
        try:
            login = http.post("/login", json={"token": tokens.alice}, headers=https)
            assert login.status_code == 200 and "secure" in login.headers["set-cookie"].lower()
        finally:
            app.state.proxies = before


def test_only_hashes_in_the_database_and_tokens_listed_without_secrets(stack) -> None:
    stack, tokens, url = stack
    with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
        made = http.post("/tokens", data={"admin": "true", "expires_in": "3600"})
        assert made.status_code == 200
        secret = made.json()["token"]
        assert len(secret) >= 22 and made.json()["admin"] and made.json()["expires_at"]
        listed = http.get("/tokens")
        assert listed.status_code == 200 and secret not in listed.text and tokens.alice not in listed.text
        assert made.json()["id"] in {t["id"] for t in listed.json()["tokens"]}
        assert http.get("/whoami", headers=bearer(secret)).json()["admin"] is True
        assert http.delete(f"/tokens/{made.json()['id']}").status_code == 200
        # Revoked on this replica at once.
        assert http.get("/whoami", headers=bearer(secret)).status_code == 401
        assert http.delete("/tokens/ffffffffffffffff").status_code == 404
        for bad in ({}, {"user": "alice", "admin": True}, {"user": "all"}, {"user": "a", "expires_in": 0}):
            assert http.post("/tokens", json=bad).status_code == 400, bad
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stored = " ".join(str(row) for row in conn.execute(text("SELECT * FROM access_tokens")))
    finally:
        engine.dispose()
    for secret_value in (tokens.alice, tokens.bob, secret):
        assert secret_value not in stored
    assert ADMIN_TOKEN not in stored


def test_the_command_line_makes_the_first_admin_token(stack) -> None:
    stack, _, _ = stack
    env = {**os.environ, "GATEWAY_DATASET_ADDR": stack.dataset_addr}
    command = [sys.executable, "-m", "tagrate_gateway.tokens"]
    made = subprocess.run([*command, "create", "--admin"], env=env, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = json.loads(made.stdout)
    assert token["admin"] and token["user"] is None and token["token"].startswith("tr_")
    with httpx.Client(base_url=stack.url, timeout=30, headers=bearer(token["token"])) as http:
        assert http.get("/whoami").json() == {"auth": True, "user": None, "admin": True}
    listed = subprocess.run([*command, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert token["id"] in listed.stdout and token["token"] not in listed.stdout
    revoked = subprocess.run([*command, "revoke", token["id"]], env=env, capture_output=True, text=True, timeout=60)
    assert revoked.returncode == 0, revoked.stderr
    again = subprocess.run([*command, "revoke", token["id"]], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "no token" in again.stderr
