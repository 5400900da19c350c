"""One mapping between domain errors, gRPC status codes and HTTP statuses.

Services raise :class:`TagrateError` subclasses from domain code. The gRPC
server interceptor turns them into a status code plus trailing metadata that
carries the error's snake_case ``code`` and kind; the client helper turns
them back into the same exception on the calling side, and the gateway
renders ``{"error": message, "code": code}`` with the kind's HTTP status.
Errors that did not come from a tagrate server (connection refused, deadline)
are mapped by gRPC status code alone.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

ERROR_CODE_KEY = "tagrate-error-code"
ERROR_KIND_KEY = "tagrate-error-kind"


class TagrateError(Exception):
    """A failure a caller can act on. ``message`` is a sentence for a person."""

    kind: ClassVar[str] = "internal"
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code

    def body(self) -> dict[str, str]:
        return {"error": self.message, "code": self.code}


class InvalidArgument(TagrateError):
    kind = "invalid_argument"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 400
    default_code = "invalid_parameter"


class NotFound(TagrateError):
    kind = "not_found"
    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = 404
    default_code = "not_found"


class Conflict(TagrateError):
    """The current state forbids the request (no model yet, up to date...)."""

    kind = "conflict"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 409
    default_code = "conflict"


class AlreadyExists(TagrateError):
    kind = "already_exists"
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409
    default_code = "already_exists"


class PermissionDenied(TagrateError):
    """The caller may not touch this (another user's album): 403."""

    kind = "permission_denied"
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403
    default_code = "forbidden"


class PayloadTooLarge(TagrateError):
    kind = "too_large"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 413
    default_code = "payload_too_large"


class UnsupportedImage(TagrateError):
    kind = "unsupported_image"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 415
    default_code = "unsupported_image"


class Overloaded(TagrateError):
    """A bounded queue is full; the caller should retry shortly."""

    kind = "overloaded"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 503
    default_code = "overloaded"


class InsufficientStorage(TagrateError):
    """The disk is (nearly) full: nothing was written; retry once space is
    freed (507)."""

    kind = "insufficient_storage"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 507
    default_code = "insufficient_storage"


class Unavailable(TagrateError):
    kind = "unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = 503
    default_code = "service_unavailable"


class DeadlineExceeded(TagrateError):
    kind = "deadline_exceeded"
    grpc_status = grpc.StatusCode.DEADLINE_EXCEEDED
    http_status = 504
    default_code = "service_timeout"


_KINDS: dict[str, type[TagrateError]] = {
    cls.kind: cls
    for cls in (
        TagrateError,
        InvalidArgument,
        NotFound,
        Conflict,
        AlreadyExists,
        PermissionDenied,
        PayloadTooLarge,
        UnsupportedImage,
        Overloaded,
        InsufficientStorage,
        Unavailable,
        DeadlineExceeded,
    )
}

# For statuses that carry no tagrate metadata (raised by gRPC itself or by a
# foreign server): the error class each status code means.
_BY_STATUS: dict[grpc.StatusCode, type[TagrateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def error_metadata(error: TagrateError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that lets the client rebuild ``error`` exactly."""
    return ((ERROR_CODE_KEY, error.code), (ERROR_KIND_KEY, error.kind))


def from_rpc_error(exc: grpc.RpcError, service: str) -> TagrateError:
    """The domain error an RPC failure means, naming ``service`` when the
    failure is about reaching it rather than about the request."""
    status = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or ""
    trailing = dict(exc.trailing_metadata() or ()) if hasattr(exc, "trailing_metadata") else {}
    kind = trailing.get(ERROR_KIND_KEY)
    if kind in _KINDS:
        return _KINDS[kind](details, trailing.get(ERROR_CODE_KEY))
    if status == grpc.StatusCode.UNAVAILABLE:
        return Unavailable(f"the {service} service is unreachable; try again shortly", f"{service}_unavailable")
    if status == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded(f"the {service} service did not answer in time", f"{service}_timeout")
    if status == grpc.StatusCode.RESOURCE_EXHAUSTED and not trailing:
        # Raised by gRPC itself for an oversized message, not by a full queue.
        return PayloadTooLarge(f"the request to the {service} service is too large: {details}")
    cls = _BY_STATUS.get(status, TagrateError)
    return cls(details or f"the {service} service failed ({status.name.lower()})")
