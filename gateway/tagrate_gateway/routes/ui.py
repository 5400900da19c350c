"""The browser UI: ``/`` (the page) and its files under ``/ui/``.

Plain HTML, CSS and JavaScript modules kept in the package
(``tagrate_gateway/ui/``: ``app.js`` imports ``lib/``, ``widgets/`` and one
module per screen under ``screens/``): no build step, nothing from another
host. The page talks only to the public REST API, with the session cookie
of the access-control work when it is on. Every file is served with a
strict Content-Security-Policy: scripts, styles, images and requests from
this origin only, no inline script or style, no framing.

The files are a fixed list (``ASSETS``) taken from the package once at
start, by file type, not a directory listing at request time: nothing else
of the package is ever served, and a path outside the list is a 404. The
page names every module as a ``modulepreload`` link, so the browser fetches
them all at once rather than one import level after another.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response

router = APIRouter(include_in_schema=False)

PAGE_URL = "/"
ASSETS_URL = "/ui"
# The content type of each kind of file the page loads; other files are never served.
MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_UI_DIR = Path(str(files("tagrate_gateway") / "ui"))
_PAGE = _UI_DIR / "index.html"
# Where index.html wants the modulepreload links.
_PRELOAD_MARK = "<!-- modulepreload -->"


def _assets() -> dict[str, str]:
    """Every file the page loads (path under ui/, with '/'), with its content type."""
    found = {
        path.relative_to(_UI_DIR).as_posix(): MEDIA_TYPES[path.suffix]
        for path in _UI_DIR.rglob("*")
        if path.is_file() and path.suffix in MEDIA_TYPES
    }
    if "app.js" not in found:  # a broken install must fail at start, not show a blank page
        raise FileNotFoundError(f"UI file {_UI_DIR / 'app.js'} is missing from the gateway package")
    return dict(sorted(found.items()))


ASSETS = _assets()

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "img-src 'self' blob:",  # blob: the upload screen's previews of chosen files
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


def _page() -> bytes:
    """index.html with a modulepreload link for every module but the entry point."""
    links = "\n".join(
        f'<link rel="modulepreload" href="ui/{name}">' for name in ASSETS if name.endswith(".js") and name != "app.js"
    )
    return _PAGE.read_text(encoding="utf-8").replace(_PRELOAD_MARK, links).encode()


_PAGE_BYTES = _page()
_PAGE_ETAG = f'"{hashlib.sha256(_PAGE_BYTES).hexdigest()[:32]}"'


@router.get(PAGE_URL, name=f"ui:{PAGE_URL}")
async def page(request: Request) -> Response:
    headers = {**UI_HEADERS, "ETag": _PAGE_ETAG}
    if request.headers.get("if-none-match") == _PAGE_ETAG:
        return Response(status_code=304, headers=headers)
    return Response(_PAGE_BYTES, media_type="text/html; charset=utf-8", headers=headers)


for _name, _media_type in ASSETS.items():
    _file_route(f"{ASSETS_URL}/{_name}", _UI_DIR / _name, _media_type)
