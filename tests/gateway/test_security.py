"""Issue 23's findings, each as a test against a real dataset service
(SQLite and PostgreSQL) behind a real gateway with access control on.
(Finding 1 and 11, ``make run``'s internal ports and environments, are in
tests/run/test_run_security.py; 4, the full disk, in test_disk_full.py.)"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import ip_network

import httpx
import pytest

from tagrate_common.logging import TextFormatter
from tagrate_common.protos import trainer_pb2
from tagrate_dataset.tokens.sessions import MAX_SESSIONS_PER_TOKEN
from tagrate_gateway.auth import SESSION_COOKIE, Caller, FailureLimiter, ProxyTrust, _caller_var
from tagrate_gateway.bodies import json_depth_ok
from tagrate_gateway.routes.training import trainer_status
from tests.imagefactory import make_image

from .stack import Stack, start_stack

ADMIN_TOKEN = "security-admin-bootstrap-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Secured:
    stack: Stack
    alice: str  # a user token of alice's
    alice_id: str
    bob: str
    image: str  # an image alice rated

    def trust_loopback(self, trusted: bool) -> None:
        """Makes the test client's address (127.0.0.1) a trusted proxy, or not."""
        networks = (ip_network("127.0.0.1/32"),) if trusted else ()
        self.stack.gateway.app.state.proxies = ProxyTrust(networks)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def secured(request, tmp_path_factory, make_pg_database) -> Iterator[Secured]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'tagrate.db'}"
    else:
        url = make_pg_database()
    stack = start_stack(
        url,
        tmp_path_factory.mktemp("data"),
        auth="on",
        admin_token=ADMIN_TOKEN,
        auth_failures_per_minute=5,
        auth_cache_seconds=0,
    )
    try:
        with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
            data = make_image("JPEG", (48, 40), seed=2301)
            added = http.post("/addrating", data={"user": "alice", "rating": "0.6"}, files={"image": ("a.jpg", data)})
            assert added.status_code == 200, added.text
            assert http.post("/addrating", data={"user": "bob", "rating": "0.2"}, files={"image": ("a.jpg", data)})
            alice = http.post("/tokens", json={"user": "alice"}).json()
            bob = http.post("/tokens", json={"user": "bob"}).json()
        yield Secured(stack, alice["token"], alice["id"], bob["token"], added.json()["image"])
    finally:
        stack.stop()


def _fresh_limiter(secured: Secured) -> None:
    auth = secured.stack.gateway.app.state.auth
    auth.limiter = FailureLimiter(auth.limiter.per_minute)


# ---- 2. the failed-login limiter -------------------------------------------------


def test_a_rotating_forwarded_for_does_not_escape_the_limiter(secured: Secured) -> None:
    _fresh_limiter(secured)
    secured.trust_loopback(False)
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        codes = [
            http.post(
                "/login", json={"token": f"wrong-{i}-xxxxxxxxxxxxxxxxx"}, headers={"X-Forwarded-For": f"10.0.0.{i}"}
            ).status_code
            for i in range(12)
        ]
    assert codes[:5] == [401] * 5 and set(codes[5:]) == {429}, codes


def test_a_valid_token_is_never_refused_by_the_limiter(secured: Secured) -> None:
    _fresh_limiter(secured)
    secured.trust_loopback(False)
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        for _ in range(10):
            http.get("/whoami", headers=bearer("wrong-token-xxxxxxxxxxxxxxxx"))
        assert http.get("/whoami", headers=bearer("wrong-token-xxxxxxxxxxxxxxxx")).status_code == 429
        assert http.get("/whoami", headers=bearer(secured.alice)).json()["user"] == "alice"
        assert http.post("/login", json={"token": secured.alice}).status_code == 200


def test_behind_a_trusted_proxy_addresses_count_apart_and_cannot_be_locked_out(secured: Secured) -> None:
    _fresh_limiter(secured)
    secured.trust_loopback(True)
    try:
        with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
            attacker = {"X-Forwarded-For": "203.0.113.7"}
            for _ in range(6):
                http.get("/whoami", headers={**attacker, **bearer("wrong-token-xxxxxxxxxxxxxxxx")})
            assert http.get("/whoami", headers={**attacker, **bearer("wrong-xxxxxxxxxxxxxxxxxxxxx")}).status_code == 429
            # Another client behind the same proxy is not affected...
            other = {"X-Forwarded-For": "198.51.100.9"}
            assert http.get("/whoami", headers={**other, **bearer("wrong-xxxxxxxxxxxxxxxxxxxxx")}).status_code == 401
            # ...and a client-written entry left of the proxy's own does not choose the address.
            spoofed = {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}
            assert http.get("/whoami", headers={**spoofed, **bearer("wrong-xxxxxxxxxxxxxxxxxxxxx")}).status_code == 429
    finally:
        secured.trust_loopback(False)


def test_the_limiter_memory_is_bounded_and_a_flood_does_not_wipe_a_record() -> None:
    limiter = FailureLimiter(per_minute=3, max_addresses=100)
    for _ in range(3):
        limiter.fail("192.0.2.1")
    for i in range(1000):
        limiter.fail(f"10.{i // 256}.{i % 256}.1")
        if i % 50 == 0:
            limiter.fail("192.0.2.1")  # still failing: stays among the most recent
    assert len(limiter) <= 100
    assert limiter.exceeded("192.0.2.1") is not None
    # IPv6 counts per /64: rotating the interface id does not help.
    for i in range(3):
        limiter.fail(f"2001:db8::{i + 1}")
    assert limiter.exceeded("2001:db8::ffff") is not None


# ---- 3. X-Forwarded-Host ---------------------------------------------------------


def test_forwarded_host_is_believed_only_from_a_trusted_proxy(secured: Secured) -> None:
    secured.trust_loopback(False)
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        assert http.post("/login", json={"token": secured.alice}).status_code == 200
        body = {"filename": secured.image, "user": "alice", "rating": 0.61}
        forged = {"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"}
        assert http.post("/updaterating", json=body, headers=forged).status_code == 403
        secured.trust_loopback(True)
        try:
            proxied = {
                "Origin": "https://tagrate.example",
                "X-Forwarded-Host": "tagrate.example",
                "X-Forwarded-Proto": "https",
            }
            assert http.post("/updaterating", json=body, headers=proxied).status_code == 200
        finally:
            secured.trust_loopback(False)


# ---- 5 and 12. JSON bodies -------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/updaterating", "/tokens"])
def test_deeply_nested_json_is_a_400(secured: Secured, path: str) -> None:
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as http:
        for body in ("[" * 1000, '{"a":' * 1000 + "1" + "}" * 1000):
            response = http.post(path, content=body, headers={"Content-Type": "application/json"})
            assert response.status_code == 400, response.text
            assert response.json()["code"] == "malformed_json"


def test_json_depth_check() -> None:
    assert json_depth_ok(b"[" * 32 + b"]" * 32)
    assert not json_depth_ok(b"[" * 33 + b"]" * 33)
    assert json_depth_ok(b'{"a": "' + b"[" * 100 + b'"}')  # brackets inside a string do not count
    assert json_depth_ok(b'{"a": "\\"' + b"[" * 100 + b'"}')


def test_token_bodies_utf16_oversized_and_duplicate_keys(secured: Secured) -> None:
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as http:
        json_type = {"Content-Type": "application/json"}
        utf16 = http.post("/tokens", content='{"user": "carol"}'.encode("utf-16"), headers=json_type)
        assert utf16.status_code == 400 and utf16.json()["code"] == "malformed_json"
        big = http.post("/tokens", content=b'{"user": "' + b"a" * 200_000 + b'"}', headers=json_type)
        assert big.status_code == 413, big.text
        twice = http.post("/tokens", content=b'{"user": "carol", "user": "dave"}', headers=json_type)
        assert twice.status_code == 400 and twice.json()["code"] == "repeated_parameter"
        assert "'user'" in twice.json()["error"]


def test_a_file_without_a_file_name_is_named_as_such(secured: Secured) -> None:
    data = make_image("JPEG", (20, 20), seed=2302)
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"\r\nContent-Type: image/jpeg\r\n\r\n'
        + data
        + b"\r\n--b--\r\n"
    )
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as http:
        response = http.post("/addimage", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert response.status_code == 400
        assert "filename" in response.json()["error"]


# ---- 6. log lines ----------------------------------------------------------------


def test_control_characters_never_reach_a_log_line(secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="tagrate_gateway"), httpx.Client(base_url=secured.stack.url) as http:
        http.get("/getimage%0d%0a12:00:00 INFO forged%1b[2J", headers=ADMIN)
        time.sleep(0.2)
    lines = [TextFormatter().format(record) for record in caplog.records if "forged" in record.getMessage()]
    assert lines
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line
        assert "\\x0d\\x0a12:00:00 INFO forged\\x1b[2J" in line


# ---- 7. per-user privacy ---------------------------------------------------------


def test_verifydatasets_shows_a_user_only_their_own_entry(secured: Secured) -> None:
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        everyone = http.get("/verifydatasets", headers=ADMIN).json()
        assert {u["user"] for u in everyone["users"]} >= {"alice", "bob"}
        own = http.get("/verifydatasets", headers=bearer(secured.alice)).json()
        assert [u["user"] for u in own["users"]] == ["alice"]


def test_trainerstatus_hides_another_users_job() -> None:
    status = trainer_pb2.TrainerStatus(
        is_training=True, state="running", current_user="bob", loss=0.5, metrics={"spearman": 0.7}
    )
    status.last_job.CopyFrom(trainer_pb2.JobSummary(job_id="j", user="bob", outcome="succeeded"))
    token = _caller_var.set(Caller(user="alice", admin=False))
    try:
        seen = trainer_status(status)
    finally:
        _caller_var.reset(token)
    assert seen.is_training and seen.current_user is None and seen.loss is None and seen.metrics == {}
    assert seen.last_job is None
    token = _caller_var.set(Caller(user="bob", admin=False))
    try:
        own = trainer_status(status)
    finally:
        _caller_var.reset(token)
    assert own.current_user == "bob" and own.metrics == {"spearman": 0.7} and own.last_job is not None
    # The global model's job is nobody's own: everyone sees it.
    status.current_user = "all"
    token = _caller_var.set(Caller(user="alice", admin=False))
    try:
        assert trainer_status(status).current_user == "all"
    finally:
        _caller_var.reset(token)


# ---- 8. NUL bytes in identifiers -------------------------------------------------


def test_nul_and_other_odd_characters_in_identifiers(secured: Secured) -> None:
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as http:
        for path in ("/tokens/a%00b", "/tokens/%e2%80%ae", "/tokens/a%0ab"):
            refused = http.delete(path)
            assert refused.status_code in (400, 404) and refused.json()["code"], path
        for params in ({"image": "a\x00b.jpg"}, {"image": secured.image[:-4] + "\x00.jpg"}):
            assert http.get("/getimage", params=params).status_code in (400, 404)
        checks = [
            http.get("/getuserdata", params={"user": "al\x00ice"}),
            http.post("/updaterating", json={"filename": "x\x00.jpg", "user": "alice", "rating": 0.5}),
            http.get("/getimagetags", params={"image": "\x00"}),
            http.post("/albums", data={"user": "alice", "images": "a\x00b"}),
        ]
        for response in checks:
            assert response.status_code in (400, 404), (response.request.url, response.text)
            assert response.json()["code"]


# ---- 9. sessions -----------------------------------------------------------------


def test_the_cookie_is_a_session_id_ended_by_logout(secured: Secured) -> None:
    _fresh_limiter(secured)
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        assert http.post("/login", json={"token": secured.alice}).status_code == 200
        cookie = http.cookies[SESSION_COOKIE]
        assert cookie != secured.alice and secured.alice not in cookie
        assert http.get("/whoami").json()["user"] == "alice"
        assert http.post("/logout").status_code == 200
    with httpx.Client(base_url=secured.stack.url, timeout=30, cookies={SESSION_COOKIE: cookie}) as replay:
        assert replay.get("/whoami").status_code == 401
        # The token itself as a cookie is no session either.
    with httpx.Client(base_url=secured.stack.url, timeout=30, cookies={SESSION_COOKIE: secured.alice}) as raw:
        assert raw.get("/whoami").status_code == 401


def test_revoking_a_token_ends_its_sessions(secured: Secured) -> None:
    _fresh_limiter(secured)
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as admin:
        made = admin.post("/tokens", json={"user": "alice"}).json()
    with (
        httpx.Client(base_url=secured.stack.url, timeout=30) as first,
        httpx.Client(base_url=secured.stack.url, timeout=30) as second,
    ):
        assert first.post("/login", json={"token": made["token"]}).status_code == 200
        assert second.post("/login", json={"token": made["token"]}).status_code == 200
        assert first.get("/whoami").status_code == 200 and second.get("/whoami").status_code == 200
        with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as admin:
            assert admin.delete(f"/tokens/{made['id']}").status_code == 200
        assert first.get("/whoami").status_code == 401
        assert second.get("/whoami").status_code == 401


def test_sessions_per_token_are_bounded(secured: Secured) -> None:
    _fresh_limiter(secured)
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as admin:
        made = admin.post("/tokens", json={"user": "bob"}).json()
    cookies = []
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        for _ in range(MAX_SESSIONS_PER_TOKEN + 1):
            http.cookies.clear()
            assert http.post("/login", json={"token": made["token"]}).status_code == 200
            cookies.append(http.cookies[SESSION_COOKIE])
    for cookie, live in ((cookies[0], False), (cookies[1], True), (cookies[-1], True)):
        with httpx.Client(base_url=secured.stack.url, timeout=30, cookies={SESSION_COOKIE: cookie}) as http:
            assert (http.get("/whoami").status_code == 200) is live


def test_a_bootstrap_admin_session_works_and_ends_at_logout(secured: Secured) -> None:
    _fresh_limiter(secured)
    with httpx.Client(base_url=secured.stack.url, timeout=30) as http:
        assert http.post("/login", json={"token": ADMIN_TOKEN}).json()["admin"] is True
        assert http.get("/tokens").status_code == 200
        cookie = http.cookies[SESSION_COOKIE]
        assert ADMIN_TOKEN not in cookie
        http.post("/logout")
    with httpx.Client(base_url=secured.stack.url, timeout=30, cookies={SESSION_COOKIE: cookie}) as replay:
        assert replay.get("/tokens").status_code == 401


# ---- 10. stored files ------------------------------------------------------------


def test_stored_files_are_never_sniffed_or_run(secured: Secured) -> None:
    with httpx.Client(base_url=secured.stack.url, timeout=30, headers=ADMIN) as http:
        data = make_image("JPEG", (24, 24), seed=2303) + b"<html><script>alert(1)</script></html>"
        added = http.post("/addimage", files={"image": ("x.jpg", data)})
        name = added.json()["image"] if added.status_code == 200 else secured.image
        for path in ("/getimage", "/getthumbnail"):
            response = http.get(path, params={"image": name})
            assert response.status_code == 200
            assert response.headers["x-content-type-options"] == "nosniff"
            csp = response.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp
            assert response.headers["content-type"].startswith("image/")
        assert http.get("/healthz").headers["x-content-type-options"] == "nosniff"
