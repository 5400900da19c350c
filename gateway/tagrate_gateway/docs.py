"""``/docs`` (Swagger UI) and ``/redoc`` without a CDN.

FastAPI's own pages load their scripts, style sheet and favicon from public
CDNs, so on an offline or firewalled host they stay blank. These pages are
FastAPI's (``get_swagger_ui_html``, ``get_redoc_html``) pointed at copies
the gateway serves itself under ``/docs-assets/``: the files the
``fastapi-offline`` package ships (Swagger UI 5 and ReDoc 2 bundles; its
version is pinned in requirements.txt). No page loads anything from another
host: ReDoc's Google Fonts are left out (it falls back to the system fonts).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse

DOCS_URL = "/docs"
REDOC_URL = "/redoc"
ASSETS_URL = "/docs-assets"
# Every file the pages load, with its content type.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
_ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))


def asset_paths() -> list[str]:
    """The URL path of every asset the docs pages load."""
    return [f"{ASSETS_URL}/{name}" for name in ASSETS]


def _asset_route(app: FastAPI, name: str, media_type: str) -> None:
    path = _ASSETS_DIR / name
    if not path.is_file():  # a broken install must fail at start, not show a blank page
        raise FileNotFoundError(f"docs asset {path} is missing; reinstall fastapi-offline")

    async def asset() -> FileResponse:
        return FileResponse(path, media_type=media_type)

    app.add_api_route(f"{ASSETS_URL}/{name}", asset, methods=["GET"], include_in_schema=False)


def install_docs(app: FastAPI) -> None:
    """Adds /docs, its OAuth2 redirect page, /redoc and their assets to
    ``app``, which must be made with ``docs_url=None, redoc_url=None``."""
    for name, media_type in ASSETS.items():
        _asset_route(app, name, media_type)

    def url(request: Request, path: str) -> str:
        # Behind a proxy that strips a prefix, links must carry it again.
        return request.scope.get("root_path", "").rstrip("/") + path

    @app.get(DOCS_URL, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=(
                url(request, app.swagger_ui_oauth2_redirect_url) if app.swagger_ui_oauth2_redirect_url else None
            ),
            init_oauth=app.swagger_ui_init_oauth,
            swagger_js_url=url(request, f"{ASSETS_URL}/swagger-ui-bundle.js"),
            swagger_css_url=url(request, f"{ASSETS_URL}/swagger-ui.css"),
            swagger_favicon_url=url(request, f"{ASSETS_URL}/favicon.png"),
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    if app.swagger_ui_oauth2_redirect_url:

        @app.get(app.swagger_ui_oauth2_redirect_url, include_in_schema=False)
        async def swagger_ui_redirect() -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

    @app.get(REDOC_URL, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=url(request, app.openapi_url or "/openapi.json"),
            title=f"{app.title} - ReDoc",
            redoc_js_url=url(request, f"{ASSETS_URL}/redoc.standalone.js"),
            redoc_favicon_url=url(request, f"{ASSETS_URL}/favicon.png"),
            with_google_fonts=False,
        )
