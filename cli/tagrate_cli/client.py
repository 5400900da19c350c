"""The gateway's REST API as the command line uses it: one HTTP client
(kept-alive connections shared by the worker threads), the bearer token on
every request, and errors turned into sentences a person can act on."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import httpx

# Answers worth trying again: the gateway or a backend restarting, or busy.
RETRY_STATUSES = frozenset({502, 503, 504})
RETRIES = 4


class ApiError(Exception):
    """A request the gateway refused or could not be sent, with why."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class Unreachable(ApiError):
    """No gateway answers at the URL: nothing else is worth trying."""


# What a person does about a 401: the gateway has access control on.
TOKEN_NEEDED = "this server needs an access token: pass --token TOKEN or set TAGRATE_TOKEN"


def _error_of(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
        message, code = body.get("error") or response.text, body.get("code")
    except ValueError:
        message, code = response.text[:200] or response.reason_phrase, None
    if response.status_code == 401:
        if "authorization" in response.request.headers:
            message = f"the token was refused: {message}"
        else:
            message = f"{TOKEN_NEEDED} ({message})"
    return ApiError(f"{response.status_code}: {message}", response.status_code, code)


class Api:
    """Thin calls on the gateway at ``url``. Thread-safe: the import's
    workers share one instance (``connections`` sizes its pool)."""

    def __init__(self, url: str, token: str | None, timeout: float = 120.0, connections: int = 8) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, limits=limits)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, ok: Iterable[int] = (200,), retries: int = RETRIES, **kwargs: Any
    ) -> httpx.Response:
        """One request, retried ``retries`` times with backoff on connection
        errors and 502/503/504 (uploads are idempotent: names are content
        hashes). Any status outside ``ok`` raises :class:`ApiError`."""
        accepted = set(ok)
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise ApiError(f"cannot reach the gateway at {self.url}: {exc}") from exc
            else:
                if response.status_code in accepted:
                    return response
                if response.status_code not in RETRY_STATUSES or attempt == retries:
                    raise _error_of(response)
            time.sleep(min(8.0, 0.25 * 2**attempt))
        raise AssertionError("unreachable")

    def check_reachable(self, timeout: float = 10.0) -> None:
        """One quick request (/healthz, no retries) before any work, so a
        server that is down or a wrong URL is one error, not one per file.
        Raises :class:`Unreachable` when nothing answers there."""
        try:
            self.http.get("/healthz", timeout=timeout)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"cannot reach the tagrate server at {self.url} ({type(exc).__name__}: {exc or 'no answer'}); "
                "start it with `make run`, or pass --url URL or set TAGRATE_URL"
            ) from exc

    def get_json(self, path: str, retries: int = RETRIES, **params: Any) -> Any:
        return self.request("GET", path, params=params, retries=retries).json()

    # ---- the endpoints the command line uses ----

    def user_images(self, user: str, rated: str = "yes") -> list[dict[str, Any]] | None:
        """Every item of ``/getuserdata`` for ``user`` (one request: no
        ``page``), or None when the user does not exist yet."""
        response = self.request("GET", "/getuserdata", ok=(200, 404), params={"user": user, "rated": rated})
        if response.status_code == 404:
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            if body.get("code") == "unknown_endpoint":
                raise _error_of(response)
            return None
        return response.json()["images"]

    def add_rating(self, data: bytes, filename: str, user: str, rating: str) -> dict[str, Any]:
        files = {"image": (filename, data)}
        return self.request("POST", "/addrating", data={"user": user, "rating": rating}, files=files).json()

    def add_image(self, data: bytes, filename: str, source: str | None = None) -> dict[str, Any]:
        fields = {"source": source} if source else {}
        return self.request("POST", "/addimage", data=fields, files={"image": (filename, data)}).json()

    def update_rating(self, image: str, user: str, rating: str) -> dict[str, Any]:
        return self.request("POST", "/updaterating", data={"image": image, "user": user, "rating": rating}).json()
