"""The gRPC server bootstrap every service uses.

:class:`GrpcServer` builds a ``grpc.server`` with

* the standard ``grpc.health.v1`` health service, and server reflection
  when ``reflection`` is on (development: ``grpcurl`` lists every method),
* with ``TAGRATE_INTERNAL_TOKEN`` set, a check that every call but a health
  check carries that secret (UNAUTHENTICATED otherwise),
* message size limits that fit the upload limits,
* an interceptor that restores the caller's request id and priority
  (:data:`~tagrate_common.grpc_wire.PRIORITY_HEADER`, for the dynamic batchers), logs and measures
  every call, and maps :class:`~tagrate_common.errors.TagrateError` to a
  status code in one place (unexpected exceptions become INTERNAL with the
  request id, never a stack trace on the wire),
* graceful shutdown: on SIGTERM/SIGINT health turns NOT_SERVING, new calls
  are refused and in-flight calls get ``shutdown_grace_seconds`` to finish,
* an exclusive port: gRPC turns SO_REUSEPORT on by default, which lets a
  second copy of a service listen on the same port and silently take half of
  its calls; tagrate turns it off unless ``reuse_port`` asks for it, so a port
  in use is a start-up error that names the port and the setting.
"""

from __future__ import annotations

import contextvars
import errno
import hmac
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .batcher import BACKGROUND, FOREGROUND, Priority, call_priority
from .config import ServiceSettings
from .errors import InvalidArgument, TagrateError, error_metadata
from .grpc_wire import INTERNAL_TOKEN_HEADER, PRIORITY_HEADER, grpc_options, use_internal_token
from .images import set_decode_slots
from .logging import REQUEST_ID_HEADER, new_request_id, request_id_var
from .metrics import GRPC_SERVER_HANDLED, GRPC_SERVER_SECONDS, start_metrics_server

log = logging.getLogger(__name__)

_QUIET_METHODS = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# The caller sent something wrong or asked for something absent: worth a line
# in the log, not an operator's attention.
_CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


class PortInUse(RuntimeError):
    """A port this service must listen on is taken (or cannot be bound);
    the message names the address and the setting that moves it."""


# Probes (Kubernetes, /readyz) carry no secret; health reveals nothing.
_UNCHECKED_METHODS = ("/grpc.health.v1.Health/",)


def _refusal(message: str) -> grpc.RpcMethodHandler:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class _InternalTokenInterceptor(grpc.ServerInterceptor):
    """Refuses (UNAUTHENTICATED) every call but a health check that does not
    carry the internal-call secret, compared in constant time, before any
    servicer sees the request."""

    def __init__(self, token: str) -> None:
        self._token = token.encode("utf-8")

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        method = handler_call_details.method
        if method.startswith(_UNCHECKED_METHODS):
            return continuation(handler_call_details)
        sent: str | bytes = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == INTERNAL_TOKEN_HEADER:
                sent = value
        sent_bytes = sent.encode("utf-8") if isinstance(sent, str) else sent
        if not hmac.compare_digest(sent_bytes, self._token):
            log.warning("refused %s: missing or wrong internal-call token", method)
            return _refusal("this service accepts calls only from tagrate services (TAGRATE_INTERNAL_TOKEN)")
        return continuation(handler_call_details)


def _nul_field(message: Any, depth: int = 0) -> str | None:
    """The name of a text field of ``message`` (nested messages included)
    holding a NUL character, else None. Bytes fields are not looked at."""
    if depth > 16 or not hasattr(message, "ListFields"):
        return None
    for descriptor, value in message.ListFields():
        if descriptor.type == descriptor.TYPE_STRING:
            values = (value,) if isinstance(value, str) else value
            if any("\x00" in item for item in values):
                return descriptor.name
        elif descriptor.type == descriptor.TYPE_MESSAGE:
            if hasattr(value, "ListFields"):
                items = [value]
            elif hasattr(value, "keys"):  # a map: its keys and values
                items = [*value.keys(), *value.values()]
            else:
                items = list(value)
            for item in items:
                if isinstance(item, str):
                    if "\x00" in item:
                        return descriptor.name
                    continue
                found = _nul_field(item, depth + 1)
                if found is not None:
                    return found
    return None


def nul_error(request: Any) -> InvalidArgument | None:
    """What an unexpected failure of a request with a NUL character in a
    text field is: a 400 (``invalid_character``) naming the field, not a 500.
    No name, tag or id of tagrate holds a NUL and PostgreSQL cannot store one
    (psycopg's DataError surfaced as a 500 where SQLite answered 404); the
    services' own validation still answers first with its specific code."""
    field = _nul_field(request)
    if field is None:
        return None
    return InvalidArgument(f"'{field}' contains a NUL character", "invalid_character")


class _ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, service: str) -> None:
        self.service = service

    def intercept_service(self, continuation, handler_call_details):  # type: ignore[override]
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        quiet = method.startswith(_QUIET_METHODS)
        name = method.rsplit("/", 1)[-1]
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, name, quiet))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, name, quiet))
        return handler  # client-streaming methods are not used by tagrate

    def _begin(self, context: grpc.ServicerContext) -> tuple[contextvars.Token[str], contextvars.Token[Priority]]:
        metadata = dict(context.invocation_metadata() or ())
        priority = BACKGROUND if metadata.get(PRIORITY_HEADER) == BACKGROUND else FOREGROUND
        return request_id_var.set(metadata.get(REQUEST_ID_HEADER) or new_request_id()), call_priority.set(priority)

    def _end(self, tokens: tuple[contextvars.Token[str], contextvars.Token[Priority]]) -> None:
        request_id_var.reset(tokens[0])
        call_priority.reset(tokens[1])

    def _fail(self, exc: BaseException, context: grpc.ServicerContext, method: str) -> tuple[grpc.StatusCode, str]:
        """The status for a failed call; TagrateErrors also carry their code
        and kind in trailing metadata so the caller can rebuild them."""
        if isinstance(exc, TagrateError):
            context.set_trailing_metadata(error_metadata(exc))
            return exc.grpc_status, exc.message
        log.exception("%s failed unexpectedly", method)
        rid = request_id_var.get()
        return grpc.StatusCode.INTERNAL, f"internal error in the {self.service} service (request id {rid})"

    def _finish(self, method: str, code: grpc.StatusCode, start: float, quiet: bool) -> None:
        elapsed = time.perf_counter() - start
        GRPC_SERVER_HANDLED.labels(self.service, method, code.name).inc()
        GRPC_SERVER_SECONDS.labels(self.service, method).observe(elapsed)
        # The gateway's access log is the one INFO line per request: a call
        # that succeeded is DEBUG here, a caller's mistake INFO, and only what
        # points at this service (unavailable, internal, deadline) a WARNING.
        if quiet or code == grpc.StatusCode.OK:
            level = logging.DEBUG
        elif code in _CLIENT_ERRORS:
            level = logging.INFO
        else:
            level = logging.WARNING
        log.log(level, "rpc %s %s", method, code.name, extra={"ms": round(elapsed * 1000, 2)})

    def _wrap_unary(self, behavior: Callable, method: str, quiet: bool) -> Callable:
        def wrapped(request, context):
            tokens = self._begin(context)
            start, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return behavior(request, context)
            except Exception as exc:
                code, details = self._fail(
                    exc if isinstance(exc, TagrateError) else nul_error(request) or exc, context, method
                )
                context.abort(code, details)  # raises
            finally:
                self._finish(method, code, start, quiet)
                self._end(tokens)

        return wrapped

    def _wrap_stream(self, behavior: Callable, method: str, quiet: bool) -> Callable:
        def wrapped(request, context) -> Iterator:
            tokens = self._begin(context)
            start, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                yield from behavior(request, context)
            except Exception as exc:
                code, details = self._fail(
                    exc if isinstance(exc, TagrateError) else nul_error(request) or exc, context, method
                )
                context.abort(code, details)  # raises
            finally:
                self._finish(method, code, start, quiet)
                self._end(tokens)

        return wrapped


class GrpcServer:
    """A tagrate gRPC server.

    ``services`` are ``(add_XServicer_to_server, servicer, "pkg.Service")``
    triples. ``on_shutdown`` runs after in-flight calls have drained.
    """

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        services: list[tuple[Callable[[Any, grpc.Server], None], Any, str]],
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._on_shutdown = on_shutdown
        set_decode_slots(settings.decode_slots)
        internal_token = settings.internal_token_value()
        # This process's own calls to its peers carry the secret too.
        use_internal_token(internal_token)
        interceptors: list[grpc.ServerInterceptor] = [_ServiceInterceptor(name)]
        if internal_token:
            interceptors.insert(0, _InternalTokenInterceptor(internal_token))
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix=f"{name}-rpc"),
            interceptors=interceptors,
            options=[*grpc_options(settings.max_message_bytes), ("grpc.so_reuseport", int(settings.reuse_port))],
            maximum_concurrent_rpcs=settings.workers * 8,
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        names = [full_name for _, _, full_name in services]
        for add, servicer, _ in services:
            add(servicer, self._server)
        if settings.reflection:
            reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self._server)
        self._service_names = names
        self.port = 0
        self._stopped = threading.Event()

    def start(self) -> int:
        """Binds, starts serving and marks every service SERVING; returns the
        port. Raises :class:`PortInUse` when the gRPC or the metrics port
        cannot be bound (the process is then expected to exit)."""
        host, port = self.settings.host, self.settings.port
        # Metrics first: a gRPC port, once bound, stays bound until the
        # server has run, so a failed metrics port would strand it.
        try:
            start_metrics_server(self.settings.metrics_port, host)
        except OSError as exc:
            raise PortInUse(self._cannot_listen(host, self.settings.metrics_port, "metrics_port", exc)) from None
        try:
            self.port = self._server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:  # grpc says only "Failed to bind"; port_problem finds out why
            self.port = 0
        if not self.port:
            raise PortInUse(self._cannot_listen(host, port, "port"))
        self._server.start()
        for name in ["", *self._service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("%s listening on %s:%d", self.name, host, self.port)
        return self.port

    def _cannot_listen(self, host: str, port: int, field: str, exc: OSError | None = None) -> str:
        setting = f"{type(self.settings).model_config.get('env_prefix', '')}{field}".upper()
        problem = (port_problem(host, port) or "gRPC could not bind it") if exc is None else _describe(exc)
        return f"cannot listen on {host}:{port}: {problem} (set {setting}, or TAGRATE_RUN_BASE_PORT under make run)"

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING first (so balancers stop sending), then drain and stop."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        log.info("%s shutting down; draining in-flight calls for up to %.1fs", self.name, grace)
        self.health.enter_graceful_shutdown()
        if self.settings.shutdown_notice_seconds:
            time.sleep(self.settings.shutdown_notice_seconds)
        self._server.stop(grace).wait()
        if self._on_shutdown:
            self._on_shutdown()
        log.info("%s stopped", self.name)

    def serve_forever(self) -> None:
        """Starts, then blocks until SIGTERM or SIGINT and shuts down gracefully."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            self.start()
        except PortInUse as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
        # Wake up now and then: the kernel may deliver SIGTERM to a gRPC or
        # worker thread, and CPython then runs the handler only when the main
        # thread next executes bytecode -- never, while it blocks in a plain
        # wait(). Seen under load: a SIGTERMed service kept serving for minutes.
        while not stop.wait(0.25):
            pass
        self.stop()


def _describe(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this machine's"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    return exc.strerror or str(exc)


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on right now (None: it can),
    found by binding it the way gRPC does: SO_REUSEADDR, so connections of
    an earlier run in TIME_WAIT do not count, and no SO_REUSEPORT, so a
    listener does."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        return f"cannot resolve {host!r} ({exc})"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            return _describe(exc)
    return None
