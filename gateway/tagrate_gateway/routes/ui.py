"""The browser UI: ``/`` (the page) and its files under ``/ui/``.

Plain HTML, CSS and one JavaScript module kept in the package
(``tagrate_gateway/ui/``): no build step, nothing from another host. The
page talks only to the public REST API, with the session cookie of the
access-control work when it is on. Every file is served with a strict
Content-Security-Policy: scripts, styles, images and requests from this
origin only, no inline script or style, no framing.

The files are a fixed list (``ASSETS``), not a directory listing, so the
proxy rules can route exactly these paths and nothing else of the package
is ever served.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

PAGE_URL = "/"
ASSETS_URL = "/ui"
# Every file the page loads, with its content type.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}
_UI_DIR = Path(str(files("tagrate_gateway") / "ui"))
_PAGE = _UI_DIR / "index.html"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self'",
        "style-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
UI_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with every deploy: revalidated (ETag) on each load.
    "Cache-Control": "no-cache",
}


def ui_paths() -> list[str]:
    """The URL path of the page and of every file it loads."""
    return [PAGE_URL, *(f"{ASSETS_URL}/{name}" for name in ASSETS)]


def _file_route(url: str, path: Path, media_type: str) -> None:
    if not path.is_file():  # a broken install must fail at start, not show a blank page
        raise FileNotFoundError(f"UI file {path} is missing from the gateway package")

    async def serve() -> FileResponse:
        return FileResponse(path, media_type=media_type, headers=UI_HEADERS)

    router.add_api_route(url, serve, methods=["GET"], name=f"ui:{url}")


_file_route(PAGE_URL, _PAGE, "text/html; charset=utf-8")
for _name, _media_type in ASSETS.items():
    _file_route(f"{ASSETS_URL}/{_name}", _UI_DIR / _name, _media_type)
