"""Every error the gateway answers has the body ``{"error": ..., "code": ...}``.

Domain errors (:class:`~tagrate_common.errors.TagrateError`, raised by the
gateway's own validation or rebuilt from a service's gRPC status) carry their
own HTTP status. FastAPI's validation errors and Starlette's 404/405 are
rewritten into the same shape, so a client never sees FastAPI's 422 body or
an HTML page. Unexpected exceptions are rendered by the request middleware
(see :mod:`tagrate_gateway.app`) with :func:`internal_error_response`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tagrate_common.errors import InvalidArgument, Overloaded, TagrateError, UnsupportedImage
from tagrate_common.logging import request_id_var


class ErrorBody(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="What went wrong, in a sentence a person can act on.")
    code: str = Field(description="A stable snake_case code for programs.")


_STATUS_MEANING = {
    400: "A parameter is missing, malformed or out of range (the message names it).",
    404: "The named image or user does not exist.",
    409: "The current state forbids the request.",
    413: "An upload is over the per-file limit, or there are too many files.",
    415: "An uploaded file is not a supported image.",
    503: "A backend service is unreachable or overloaded (the message names it).",
    504: "A backend service did not answer in time.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the error statuses a route can answer."""
    return {status: {"model": ErrorBody, "description": _STATUS_MEANING[status]} for status in statuses}


class UnsupportedMediaType(UnsupportedImage):
    """The request body is not the media type the endpoint reads (415)."""

    default_code = "unsupported_media_type"


def error_response(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def tagrate_error_response(exc: TagrateError) -> JSONResponse:
    # An overloaded model queue clears within moments; tell clients when to retry.
    headers = {"Retry-After": "1"} if isinstance(exc, Overloaded) else None
    return JSONResponse(exc.body(), status_code=exc.http_status, headers=headers)


def internal_error_response() -> JSONResponse:
    """The 500 for a bug: the request id lets an operator find the traceback."""
    return error_response(500, f"internal error (request id {request_id_var.get()})", "internal_error")


async def _on_tagrate_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TagrateError)
    return tagrate_error_response(exc)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    # loc is e.g. ("query", "page"); the last string item names the parameter.
    names = [str(part) for part in first.get("loc", ()) if isinstance(part, str) and part not in ("query", "body")]
    param = names[-1] if names else "request"
    problem = first.get("msg", "is invalid")
    return tagrate_error_response(
        InvalidArgument(f"the '{param}' parameter is invalid: {problem}", "invalid_parameter")
    )


async def _on_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message, code = f"there is no endpoint at {request.url.path}; see /docs for the API", "unknown_endpoint"
    elif exc.status_code == 405:
        allowed = headers.get("allow") or headers.get("Allow") or ""
        message = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
        code = "method_not_allowed"
    else:
        message = str(exc.detail) if exc.detail else "the request could not be handled"
        code = "http_error"
    return error_response(exc.status_code, message, code, headers or None)


def install_error_handlers(app: FastAPI) -> None:
    """Registers the handlers that give every error the API's JSON shape."""
    app.add_exception_handler(TagrateError, _on_tagrate_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
