"""``tagrate import`` and ``tagrate status`` against a real gateway with
access control on (GATEWAY_AUTH=on, an admin token) and a real dataset
service: a user token imports as its user only, the admin token (from
TAGRATE_TOKEN) for everyone; without a token, or with a wrong one, the
command says so in a sentence and exits 1, never with a traceback."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.gateway.stack import Stack, start_stack

from .conftest import photo_jpegs, run_cli
from .test_import import name_of

ADMIN_TOKEN = secrets.token_urlsafe(32)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Stack]:
    stack = start_stack(
        f"sqlite:///{tmp_path / 'server.db'}",
        tmp_path / "server-data",
        max_upload_bytes=20 << 20,
        max_bulk_files=256,
        auth="on",
        admin_token=ADMIN_TOKEN,
        auth_failures_per_minute=1000,
    )
    try:
        yield stack
    finally:
        stack.stop()


def user_token(url: str, user: str) -> str:
    response = httpx.post(f"{url}/tokens", data={"user": user}, headers=ADMIN, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["token"]


def ratings_of(url: str, user: str) -> dict[str, float]:
    response = httpx.get(f"{url}/getuserdata", params={"user": user}, headers=ADMIN, timeout=30)
    if response.status_code == 404:
        return {}
    assert response.status_code == 200, response.text
    return {item["image"]: item["rating"] for item in response.json()["images"]}


def stored_count(url: str) -> int:
    users = httpx.get(f"{url}/verifydatasets", headers=ADMIN, timeout=30).json()["users"]
    if not users:
        return 0
    params = {"user": users[0]["user"], "rated": "all", "limit": 1, "page": 1}
    return httpx.get(f"{url}/getuserdata", params=params, headers=ADMIN, timeout=30).json()["total"]


def assert_plain_refusal(result, *phrases: str) -> None:
    output = " ".join((result.stdout + result.stderr).split())  # the status table wraps at 80 columns
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    for phrase in phrases:
        assert phrase in output, output


def test_without_a_token_import_and_status_say_a_token_is_needed(server, tmp_path, write_files):
    root = write_files({"0/a.jpg": photo_jpegs(1, seed=40)[0]})
    needed = ("401", "needs an access token", "--token", "TAGRATE_TOKEN")
    result = run_cli(server.url, "import", str(root), "--user", "ivy", "--rating-from-folder")
    assert_plain_refusal(result, *needed)
    # Unrated images only (no user to look up first): refused as plainly, before any upload.
    result = run_cli(server.url, "import", str(root))
    assert_plain_refusal(result, *needed)
    assert result.stderr.count("401") == 1
    assert stored_count(server.url) == 0

    status = run_cli(server.url, "status")
    assert_plain_refusal(status, "not signed in", *needed)
    as_json = run_cli(server.url, "status", "--json")
    assert as_json.returncode == 1
    assert "needs an access token" in json.loads(as_json.stdout)["unauthorized"]

    wrong = run_cli(server.url, "--token", "tr_" + secrets.token_urlsafe(32), "import", str(root))
    assert_plain_refusal(wrong, "401", "the token was refused", "not valid")
    assert_plain_refusal(run_cli(server.url, "status", env={"TAGRATE_TOKEN": "tr_nonsense"}), "the token was refused")
    assert stored_count(server.url) == 0


def test_a_user_token_imports_as_its_user_and_the_admin_token_for_everyone(server, tmp_path, write_files):
    photos = photo_jpegs(5, seed=41)
    root = write_files({"0/a.jpg": photos[0], "6/b.jpg": photos[1], "3/c.jpg": photos[2]})
    ivy = user_token(server.url, "ivy")

    result = run_cli(
        server.url, "--token", ivy, "import", str(root), "--user", "ivy", "--rating-from-folder", "--summary-json",
        str(tmp_path / "summary.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images_added"] == 3 and summary["ratings_added"] == 3 and summary["failed"] == []
    assert ratings_of(server.url, "ivy") == {name_of(photos[0]): 0.0, name_of(photos[1]): 1.0, name_of(photos[2]): 0.5}

    # Run again: resumable with a user token too (nothing sent twice).
    again = run_cli(server.url, "--token", ivy, "import", str(root), "--user", "ivy", "--rating-from-folder")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "images: 0 added, 3 already there" in again.stdout

    # ivy's token may not import as anyone else: a 403 in plain words, nothing stored.
    other = run_cli(server.url, "--token", ivy, "import", str(root), "--user", "jack", "--rating-from-folder")
    assert_plain_refusal(other, "403", "ivy")
    assert ratings_of(server.url, "jack") == {}

    # status with ivy's token: ready, the stored images, the users.
    status = run_cli(server.url, "--token", ivy, "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    state = json.loads(status.stdout)
    assert state["unauthorized"] is None and state["images"] == 3 and [u["user"] for u in state["users"]] == ["ivy"]

    # The admin token from TAGRATE_TOKEN: a ratings file for two users, new images among them.
    more = write_files({"d.jpg": photos[3], "e.jpg": photos[4]})
    ratings = tmp_path / "ratings.csv"
    ratings.write_text("path,user,rating\nd.jpg,jack,0.25\ne.jpg,ivy,0.75\n0/a.jpg,jack,1\n")
    admin = run_cli(server.url, "import", str(more), "--ratings", str(ratings), env={"TAGRATE_TOKEN": ADMIN_TOKEN})
    assert admin.returncode == 0, admin.stdout + admin.stderr
    assert ratings_of(server.url, "jack") == {name_of(photos[3]): 0.25, name_of(photos[0]): 1.0}
    assert ratings_of(server.url, "ivy")[name_of(photos[4])] == 0.75

    status = run_cli(server.url, "status", env={"TAGRATE_TOKEN": ADMIN_TOKEN})
    assert status.returncode == 0, status.stdout + status.stderr
    assert "users: 2" in status.stdout and "images: 5" in status.stdout
