"""Two gateway replicas on one dataset service (PostgreSQL): a token
revoked, or a session logged out, through one replica is refused by the
other once its ``GATEWAY_AUTH_CACHE_SECONDS`` have passed (the bound
docs/replicas.md states); the failed-login limiter counts per replica."""

from __future__ import annotations

import time

import httpx

from tagrate_gateway.auth import SESSION_COOKIE

from .conftest import GatewayServer, gateway_settings
from .stack import start_stack

ADMIN_TOKEN = "admin-bootstrap-token-for-the-replica-tests-0123"
CACHE_SECONDS = 0.5
SETTINGS = {"auth": "on", "admin_token": ADMIN_TOKEN, "auth_cache_seconds": CACHE_SECONDS}


def test_revocation_and_logout_reach_every_replica_within_the_cache_time(make_pg_database, tmp_path) -> None:
    stack = start_stack(make_pg_database(), tmp_path / "data", **SETTINGS, auth_failures_per_minute=3)
    other = GatewayServer(
        gateway_settings(stack.dataset_addr, tmp_path / "data", **SETTINGS, auth_failures_per_minute=3)
    )
    other.start()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as one, httpx.Client(base_url=other.url, timeout=30) as two:
            made = one.post("/tokens", json={"admin": True}, headers=admin).json()
            token = {"Authorization": f"Bearer {made['token']}"}
            login = two.post("/login", data={"token": made["token"]})
            assert login.status_code == 200, login.text
            session = {SESSION_COOKIE: login.cookies[SESSION_COOKIE]}
            two.cookies.clear()
            for client in (one, two):  # both replicas have verified (and cached) the token
                assert client.get("/whoami", headers=token).status_code == 200
            for client in (one, two):
                assert client.get("/whoami", cookies=session).json()["admin"] is True

            assert one.post("/logout", cookies=session).status_code == 200
            assert one.delete(f"/tokens/{made['id']}", headers=admin).status_code == 200
            assert one.get("/whoami", headers=token).status_code == 401  # at once where it was revoked
            time.sleep(CACHE_SECONDS + 0.2)
            assert two.get("/whoami", headers=token).status_code == 401
            assert two.get("/whoami", cookies=session).status_code == 401

            # Failed attempts are counted per replica: the limit on one leaves the other's count alone.
            wrong = {"Authorization": "Bearer tr_wrong-token-0123456789abcdef"}
            statuses = [one.get("/whoami", headers=wrong).status_code for _ in range(4)]
            assert statuses[-1] == 429
            assert two.get("/whoami", headers=wrong).status_code == 401
    finally:
        other.stop()
        stack.stop()
