"""Checks on gateway answers shared by the test modules."""

from __future__ import annotations

import re

import httpx


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The API's error shape: JSON with exactly ``error`` and ``code``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert body["error"] and re.fullmatch(r"[a-z][a-z0-9_]*", body["code"])
    if code is not None:
        assert body["code"] == code, body
    return body
