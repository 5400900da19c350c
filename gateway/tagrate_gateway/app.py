"""The FastAPI application: backends, middleware, error handlers, routes."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_client import AsyncBackend, use_internal_token
from tagrate_common.logging import new_request_id, request_id_var
from tagrate_common.metrics import HTTP_REQUESTS, HTTP_SECONDS
from tagrate_common.protos import rater_pb2_grpc, tagger_pb2_grpc, trainer_pb2_grpc

from .auth import Authenticator, ProxyTrust, document_access
from .config import BACKENDS, GatewaySettings
from .docs import install_docs
from .errors import install_error_handlers, internal_error_response
from .params import REQUIRED_MARK
from .routes import (
    access,
    albums,
    collection,
    collection_info,
    datasets,
    global_model,
    images,
    ops,
    owned_tags,
    ratings,
    similar,
    tagger_models,
    tags,
    tasteloop,
    training,
    ui,
    users,
)

log = logging.getLogger("tagrate_gateway")

_STUBS = {
    "dataset": DatasetStubs,
    "tagger": tagger_pb2_grpc.TaggerServiceStub,
    "rater": rater_pb2_grpc.RaterServiceStub,
    "trainer": trainer_pb2_grpc.TrainerServiceStub,
}
# Response headers a cross-origin script may read (besides the CORS-safelisted ones).
CORS_EXPOSED_HEADERS = ("ETag", "X-Request-ID", "Retry-After")
CORS_MAX_AGE_SECONDS = 600
# A client's id is kept only when it cannot break log lines or headers.
_CLIENT_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
REQUEST_ID_RESPONSE_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "<unmatched>"
# Polled by clients, probes and scrapers, often every few seconds: their
# successes are logged at DEBUG so they do not drown the requests that
# change something; a failure (5xx) is still logged at INFO.
QUIET_ROUTES = frozenset({"/trainerstatus", "/healthz", "/readyz", "/metrics"})
# The HTTP metrics' children by (route, method, status): labels() checks and
# locks on every call. Route templates and methods are few; past this many
# (odd methods a client made up) labels() is simply called each time.
_HTTP_CHILDREN_MAX = 1024
_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _http_metrics(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram children of one request."""
    key = (route, method, status)
    children = _http_children.get(key)
    if children is None:
        children = (HTTP_REQUESTS.labels(route, method, str(status)), HTTP_SECONDS.labels(route, method))
        if len(_http_children) < _HTTP_CHILDREN_MAX:
            _http_children[key] = children
    return children


class RequestContextMiddleware:
    """Per HTTP request: sets the request id (echoed as ``X-Request-ID`` and
    forwarded to every backend call), writes one access-log line (INFO;
    DEBUG for a poll of a ``QUIET_ROUTES`` path that did not fail; uvicorn's
    own access log is off, see ``tagrate_common.logging``), records the
    HTTP metrics by route template, and turns an unexpected exception into
    the API's 500 body.

    A plain ASGI middleware rather than ``BaseHTTPMiddleware``: the request
    body stays a stream (uploads are size-checked while they arrive) and the
    request id context variable is visible to the route."""

    def __init__(self, app: ASGIApp, trust_request_id: bool) -> None:
        self.app = app
        self.trust_request_id = trust_request_id

    def _request_id(self, scope: Scope) -> str:
        if self.trust_request_id:
            for name, value in scope.get("headers", ()):
                if name == b"x-request-id":
                    candidate = value.decode("latin-1")
                    if _CLIENT_REQUEST_ID_RE.fullmatch(candidate):
                        return candidate
                    break
        return new_request_id()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id = self._request_id(scope)
        token = request_id_var.set(request_id)
        status, started = 500, False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_RESPONSE_HEADER] = request_id
                # No answer of the gateway is ever to be content-sniffed.
                headers.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                raise  # the response is half sent; only closing the connection is left
            await internal_error_response()(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", None) or UNMATCHED_ROUTE
            requests, seconds = _http_metrics(route, scope["method"], status)
            requests.inc()
            seconds.observe(elapsed)
            level = logging.DEBUG if route in QUIET_ROUTES and status < 500 else logging.INFO
            log.log(level, "%s %s %d", scope["method"], scope["path"], status, extra={"ms": round(elapsed * 1000, 1)})
            request_id_var.reset(token)


def create_backends(settings: GatewaySettings) -> dict[str, AsyncBackend[Any]]:
    """One client per backend service; "" addresses stay unconfigured."""
    return {
        name: AsyncBackend(
            name,
            settings.backend_addr(name),
            _STUBS[name],
            settings.backend_timeout(name),
            settings.max_message_bytes,
        )
        for name in BACKENDS
    }


def _mark_required(parameter: dict[str, Any]) -> None:
    """A parameter declared with ``params.required_query`` is documented as
    required, of type string (routes declare it optional so that its absence
    is the API's own 400, not FastAPI's 422)."""
    schema = parameter.get("schema", {})
    if schema.pop(REQUIRED_MARK, False):
        parameter["required"] = True
        schema.pop("anyOf", None)
        schema["type"] = "string"


INSUFFICIENT_STORAGE_RESPONSE = {
    "description": "The server's disk is (nearly) full (`insufficient_storage`); nothing was stored.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


def _tidy_openapi(app: FastAPI) -> None:
    """Makes the generated schema say what the gateway does. FastAPI
    documents a 422 on every route with parameters; the gateway never
    answers 422 (validation errors are 400s, see errors.py), so they are
    dropped. Required query parameters are marked required."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
                    if '"binary"' in json.dumps(operation.get("requestBody", {})):
                        # An upload can find the disk full (TAGRATE_MIN_FREE_BYTES).
                        operation["responses"].setdefault("507", INSUFFICIENT_STORAGE_RESPONSE)
                    for parameter in operation.get("parameters", []):
                        _mark_required(parameter)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
        assert app.openapi_schema is not None  # generate() stored it
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway application; its backend channels close on shutdown."""
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for backend in app.state.backends.values():
            await backend.close()

    app = FastAPI(
        title="tagrate",
        summary="Image tagging and personal-taste rating.",
        description='The REST API of tagrate. Errors are always `{"error": "...", "code": "..."}`.',
        version="1.0",
        lifespan=lifespan,
        # Served by install_docs from the gateway's own files, not a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.backends = create_backends(settings)
    install_error_handlers(app)
    use_internal_token(settings.internal_token_value())  # every backend call carries it
    app.state.auth = Authenticator(settings, app.state.backends["dataset"])
    app.state.proxies = ProxyTrust(settings.trusted_proxy_networks)
    if not app.state.auth.enabled:
        log.warning(
            "ACCESS CONTROL IS OFF (GATEWAY_AUTH=%s, listening on %s): anyone who can reach the gateway can "
            "change every user's data; set GATEWAY_AUTH=on unless only trusted clients can reach it",
            settings.auth,
            settings.host,
        )
    # Inside the request middleware, so a preflight gets a request id and an
    # access line; CORSMiddleware answers preflights itself (no route, no
    # backend call). Credentials (the session cookie) only for origins listed
    # by name: with "*" any page could ride a visitor's session.
    origins = settings.cors_origin_list
    app.add_middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "DELETE", "PATCH"],
        allow_headers=["*"],
        allow_credentials=bool(origins) and "*" not in origins,
        expose_headers=list(CORS_EXPOSED_HEADERS),
        max_age=CORS_MAX_AGE_SECONDS,
    )
    app.add_middleware(RequestContextMiddleware, trust_request_id=settings.trust_request_id)
    for module in (
        images,
        users,
        collection,
        collection_info,
        datasets,
        tags,
        ratings,
        training,
        ops,
        access,
        albums,
        global_model,
        tasteloop,
        similar,
        tagger_models,
    ):
        app.include_router(module.router)
    app.include_router(owned_tags.router)
    app.include_router(ui.router)  # the browser UI at / (not part of the API schema)
    document_access(app.routes)
    install_docs(app)
    _tidy_openapi(app)
    return app
