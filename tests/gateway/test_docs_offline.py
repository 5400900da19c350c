"""/docs and /redoc work on a host with no internet: the pages name no other
host, and every file they load comes from the gateway itself."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

from tagrate_gateway.docs import ASSETS_URL, asset_paths
from tests.support import free_port

from .conftest import gateway_settings

_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


class _References(HTMLParser):
    """Every URL a page's tags load (``src`` and ``href``), plus the spec
    URL that Swagger UI's and ReDoc's start-up code names."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href", "spec-url") and value]


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls + re.findall(r"url: '([^']+)'", html)


@pytest.fixture
def gateway(start_gateway, tmp_path):
    return start_gateway(gateway_settings(f"127.0.0.1:{free_port()}", tmp_path))


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_the_gateway(gateway, page: str) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        reply = http.get(page)
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/html")
        # no other host anywhere: no absolute or protocol-relative URL
        assert not re.search(r"(https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}", reply.text), reply.text
        urls = references(reply.text)
        assert "/openapi.json" in urls
        assert any(url.endswith(".js") for url in urls), urls
        for url in urls:
            assert url.startswith("/"), url
            asset = http.get(url)
            assert asset.status_code == 200, url
            expected = _CONTENT_TYPES[url[url.rindex(".") :]]
            assert asset.headers["content-type"].split(";")[0] == expected, url
            assert len(asset.content) > 1000, url  # the real file, not an error page


def test_every_asset_is_served_and_is_what_it_claims(gateway) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        bodies = {path: http.get(path) for path in asset_paths()}
        missing = http.get(f"{ASSETS_URL}/nothing.js")
    assert all(reply.status_code == 200 for reply in bodies.values())
    assert b"SwaggerUIBundle" in bodies[f"{ASSETS_URL}/swagger-ui-bundle.js"].content
    assert b".swagger-ui" in bodies[f"{ASSETS_URL}/swagger-ui.css"].content
    assert b"Redoc" in bodies[f"{ASSETS_URL}/redoc.standalone.js"].content
    assert bodies[f"{ASSETS_URL}/favicon.png"].content.startswith(b"\x89PNG")
    assert missing.status_code == 404 and set(missing.json()) == {"error", "code"}


def test_the_oauth2_redirect_page_is_still_served(gateway) -> None:
    with httpx.Client(base_url=gateway.url) as http:
        reply = http.get("/docs/oauth2-redirect")
    assert reply.status_code == 200 and "oauth2" in reply.text.lower()
