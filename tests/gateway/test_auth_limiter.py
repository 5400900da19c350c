"""Access control's limiter end to end: failed token uses are rate limited
(429), and the bootstrap admin token is never locked out. The access matrix
is test_auth.py."""

from __future__ import annotations

from pathlib import Path

import httpx

from .stack import start_stack

ADMIN_TOKEN = "admin-bootstrap-token-for-the-tests-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_failed_token_uses_are_rate_limited(tmp_path: Path) -> None:
    stack = start_stack(
        f"sqlite:///{tmp_path / 'tagrate.db'}",
        tmp_path / "data",
        auth="on",
        admin_token=ADMIN_TOKEN,
        auth_failures_per_minute=3,
    )
    try:
        with httpx.Client(base_url=stack.url, timeout=30) as http:
            for _ in range(3):
                assert http.post("/login", json={"token": "nope-nope-nope-nope-nope"}).status_code == 401
            limited = http.post("/login", json={"token": "nope-nope-nope-nope-nope"})
            assert limited.status_code == 429 and limited.json()["code"] == "too_many_requests"
            assert http.get("/getuserdata", headers=bearer("still-wrong-xxxxxxxxxxxx")).status_code == 429
            # The bootstrap admin token is checked before the limiter: an operator is never locked out.
            assert http.get("/whoami", headers=ADMIN).status_code == 200
    finally:
        stack.stop()
