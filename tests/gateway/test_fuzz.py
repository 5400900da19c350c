"""Schemathesis against a real stack (a dataset service on SQLite behind
the gateway, access control on): every operation of /openapi.json with a
bounded number of generated examples, anonymous, as a user and as admin. No
5xx (beyond a documented 503 for the model services this stack does not
run), and every answer documented: its status code, content type and body
schema. ``python -m bench fuzz`` runs the same with a larger budget."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.imagefactory import make_image

from .fuzzing import run_fuzz
from .stack import Stack, start_stack

pytest.importorskip("schemathesis", reason="schemathesis is a test requirement (requirements.txt)")

ADMIN_TOKEN = "fuzz-admin-bootstrap-token-0123456789abcd"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
EXAMPLES = 4  # per operation and caller: about a thousand requests in all


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory) -> Iterator[tuple[Stack, str]]:
    stack = start_stack(
        f"sqlite:///{tmp_path_factory.mktemp('db') / 'tagrate.db'}",
        tmp_path_factory.mktemp("data"),
        auth="on",
        admin_token=ADMIN_TOKEN,
        auth_failures_per_minute=1_000_000,
    )
    try:
        with httpx.Client(base_url=stack.url, timeout=30, headers=ADMIN) as http:
            data = make_image("JPEG", (40, 32), seed=2331)
            added = http.post("/addrating", data={"user": "alice", "rating": "0.4"}, files={"image": ("f.jpg", data)})
            assert added.status_code == 200, added.text
            user = http.post("/tokens", json={"user": "alice"}).json()["token"]
        yield stack, user
    finally:
        stack.stop()


def test_every_operation_answers_as_documented(fuzz_stack) -> None:
    stack, user = fuzz_stack
    schema = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    result = run_fuzz(
        stack.url,
        schema,
        [("anonymous", {}), ("user", {"Authorization": f"Bearer {user}"}), ("admin", ADMIN)],
        EXAMPLES,
    )
    assert result.operations >= 3 * 40 and result.examples >= result.operations
    assert not result.failures, f"{len(result.failures)} problems:\n" + "\n".join(result.failures[:40])
