"""Clients for calling other tagrate services.

Callers use the generated stub's own methods, so a request can be followed
from the caller to the servicer and the reply is typed::

    reply = await backend.stub.Rate(request)               # AsyncBackend
    reply = backend.stub.GetUser(request, timeout=2.0)     # Backend

(The dataset service has one stub per resource over the one channel:
``backend.stub.library.GetUserData(request)``, see ``dataset_stubs.py``.)

What every call needs is done once, by client interceptors on the channel
under the stub: a deadline (the backend's default unless the call passes
``timeout=``; for a server-streaming call it covers the whole stream), the
current request id as metadata (and, for a backend made with
``priority=BACKGROUND``, the header that puts its calls behind interactive
ones in a model service's batcher), the Prometheus client metrics, and gRPC
failures turned into :class:`~tagrate_common.errors.TagrateError` naming the
service. A backend whose target is "" is not configured: ``backend.stub``
raises :class:`~tagrate_common.errors.Unavailable` naming the service.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .batcher import BACKGROUND, FOREGROUND, Priority
from .errors import TagrateError, Unavailable, from_rpc_error
from .grpc_wire import INTERNAL_TOKEN_HEADER, PRIORITY_HEADER, grpc_options, internal_token
from .grpc_wire import use_internal_token as use_internal_token  # re-exported for callers (create_app)
from .logging import REQUEST_ID_HEADER, request_id_var
from .metrics import GRPC_CLIENT_HANDLED, GRPC_CLIENT_SECONDS
from .replicas import REPLICA_RETRIES, channel_target, replicated

StubT = TypeVar("StubT")


def channel_options(max_message_bytes: int, target: str = "") -> list[tuple[str, Any]]:
    # round_robin spreads calls over every address a name resolves to (a
    # headless Kubernetes Service lists one per pod); pick_first would pin
    # every call to one replica for the life of the HTTP/2 connection.
    # gRPC waits up to 120 s between reconnect attempts by default: after a
    # service's crash loop the caller would keep failing for minutes after it
    # is back. 5 s bounds that gap.
    return [
        *grpc_options(max_message_bytes),
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.max_reconnect_backoff_ms", 5000),
        *([("grpc.service_config", REPLICA_RETRIES), ("grpc.enable_retries", 1)] if replicated(target) else []),
    ]


_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


def _as_text(method: str | bytes) -> str:
    # grpc.aio hands interceptors the method name as bytes, grpc as str.
    return method.decode() if isinstance(method, bytes) else method


def _method_name(method: str | bytes) -> str:
    """``/tagrate.dataset.v1.UserService/GetUser`` -> ``GetUser`` (the metrics label)."""
    return _as_text(method).rsplit("/", 1)[-1]


class _CallPolicy:
    """What every call to one service shares: its name (for errors and
    metrics), its default deadline and its priority."""

    def __init__(self, service: str, timeout: float, priority: Priority = FOREGROUND) -> None:
        self.service = service
        self.timeout = timeout
        self.priority = priority

    def deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def metadata(self, metadata: Any) -> list[tuple[str, Any]]:
        pairs = [(key, value) for key, value in (metadata or ())]
        if not any(key == REQUEST_ID_HEADER for key, _ in pairs):
            pairs.append((REQUEST_ID_HEADER, request_id_var.get()))
        if self.priority == BACKGROUND and not any(key == PRIORITY_HEADER for key, _ in pairs):
            pairs.append((PRIORITY_HEADER, BACKGROUND))
        token = internal_token()
        if token is not None:
            pairs.append((INTERNAL_TOKEN_HEADER, token))
        return pairs

    def error(self, exc: grpc.RpcError) -> TagrateError:
        return from_rpc_error(exc, self.service)

    def not_configured(self) -> Unavailable:
        return Unavailable(f"the {self.service} service is not configured", f"{self.service}_unavailable")

    def observe(self, method: str | bytes, code: grpc.StatusCode, start: float) -> None:
        name = _method_name(method)
        GRPC_CLIENT_HANDLED.labels(self.service, name, code.name).inc()
        GRPC_CLIENT_SECONDS.labels(self.service, name).observe(time.perf_counter() - start)


# grpc.ClientCallDetails is an abstract class without a constructor; gRPC's
# own examples build the replacement details as a namedtuple like this one.
class _ClientCallDetails(
    collections.namedtuple(
        "_ClientCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _SyncStream:
    """A server stream as the caller sees it: its messages, its failure as a
    TagrateError naming the service, and the gRPC call's other methods
    (``cancel()`` above all) passed through. Counted once, when it ends."""

    def __init__(self, call: Any, policy: _CallPolicy, method: str, start: float) -> None:
        self._call = call
        self._policy = policy
        self._method = method
        self._start = start
        self._ended = False
        self._lock = threading.Lock()  # cancel() may come from another thread

    def _end(self, code: grpc.StatusCode) -> None:
        with self._lock:
            ended, self._ended = self._ended, True
        if not ended:
            self._policy.observe(self._method, code, self._start)

    def __iter__(self) -> _SyncStream:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._call)
        except StopIteration:
            self._end(grpc.StatusCode.OK)
            raise
        except grpc.RpcError as exc:
            self._end(exc.code())
            raise self._policy.error(exc) from None

    def cancel(self) -> bool:
        self._end(grpc.StatusCode.CANCELLED)
        return self._call.cancel()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)


class _SyncInterceptor(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Deadline, request id, metrics and error mapping for a blocking channel."""

    def __init__(self, policy: _CallPolicy) -> None:
        self._policy = policy

    def _details(self, details: grpc.ClientCallDetails) -> _ClientCallDetails:
        return _ClientCallDetails(
            details.method,
            self._policy.deadline(details.timeout),
            self._policy.metadata(details.metadata),
            details.credentials,
            details.wait_for_ready,
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        start = time.perf_counter()
        # The continuation does not raise: it returns the finished call, or
        # the grpc.RpcError itself when the RPC failed.
        outcome = continuation(self._details(client_call_details), request)
        code = outcome.code()
        self._policy.observe(client_call_details.method, code, start)
        if isinstance(outcome, grpc.RpcError):
            # Raised from here, it reaches the caller of stub.Method(...) as is.
            raise self._policy.error(outcome) from None
        return outcome

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        start = time.perf_counter()
        call = continuation(self._details(client_call_details), request)
        return _SyncStream(call, self._policy, client_call_details.method, start)


class _AsyncUnaryInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """The asyncio twin of :class:`_SyncInterceptor`, for unary calls.

    grpc.aio runs the interceptors in a task of their own and re-raises
    whatever that task raised from ``await stub.Method(...)``, so a
    TagrateError raised here reaches the caller unchanged (the tests in
    tests/common/test_grpc_plumbing.py hold it to that). The task is created
    inside ``stub.Method(...)``, so it sees the caller's request id."""

    def __init__(self, policy: _CallPolicy) -> None:
        self._policy = policy

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        if _as_text(client_call_details.method) == _HEALTH_CHECK:
            # health() wants the raw status name, and probes are not traffic.
            return await continuation(client_call_details, request)
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            call = await continuation(_async_details(self._policy, client_call_details), request)
            return await call
        except grpc.RpcError as exc:
            code = exc.code()
            raise self._policy.error(exc) from None
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._policy.observe(client_call_details.method, code, start)


# A separate class, not a second base of the one above: grpc.aio files each
# interceptor under the first arity it is an instance of, so one object
# implementing both would never see a server-streaming call.
class _AsyncStreamInterceptor(grpc.aio.UnaryStreamClientInterceptor):
    """The asyncio twin of :class:`_SyncInterceptor`, for server streams:
    the messages come through a generator that maps the stream's failure."""

    def __init__(self, policy: _CallPolicy) -> None:
        self._policy = policy

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        start = time.perf_counter()
        call = await continuation(_async_details(self._policy, client_call_details), request)
        return self._messages(call, client_call_details.method, start)

    async def _messages(self, call: Any, method: bytes, start: float) -> AsyncIterator[Any]:
        code = grpc.StatusCode.OK
        try:
            async for message in call:
                yield message
        except grpc.RpcError as exc:
            code = exc.code()
            raise self._policy.error(exc) from None
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._policy.observe(method, code, start)


def _async_details(policy: _CallPolicy, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
    return details._replace(
        timeout=policy.deadline(details.timeout),
        metadata=grpc.aio.Metadata(*policy.metadata(details.metadata)),
    )


class Backend(Generic[StubT]):
    """A blocking client for one service: ``backend.stub`` is the generated
    stub over an intercepted channel (see the module docstring). ``target``
    "" means not configured. ``priority=BACKGROUND`` marks every call as
    work no person waits on (a call's own priority metadata wins)."""

    def __init__(
        self,
        name: str,
        target: str,
        stub_cls: Callable[[grpc.Channel], StubT],
        timeout: float,
        max_message_bytes: int,
        priority: Priority = FOREGROUND,
    ) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        self._policy = _CallPolicy(name, timeout, priority)
        resolved = channel_target(target) if target else ""
        self._channel = (
            grpc.insecure_channel(resolved, options=channel_options(max_message_bytes, resolved)) if target else None
        )
        self._stub = (
            stub_cls(grpc.intercept_channel(self._channel, _SyncInterceptor(self._policy))) if self._channel else None
        )

    @property
    def stub(self) -> StubT:
        """The service's stub; Unavailable naming the service when it is not configured."""
        if self._stub is None:
            raise self._policy.not_configured()
        return self._stub

    def health(self, timeout: float = 2.0) -> str:
        """The service's overall health status name, e.g. SERVING."""
        if self._channel is None:
            return "NOT_CONFIGURED"
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            return exc.code().name

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()


class AsyncBackend(Generic[StubT]):
    """The asyncio twin of :class:`Backend`, for the gateway. The channel is
    created lazily, on first use, inside the running event loop."""

    def __init__(
        self,
        name: str,
        target: str,
        stub_cls: Callable[[grpc.aio.Channel], StubT],
        timeout: float,
        max_message_bytes: int,
    ) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        self._policy = _CallPolicy(name, timeout)
        self._stub_cls = stub_cls
        self._max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None
        self._stub: StubT | None = None

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            target = channel_target(self.target)
            self._channel = grpc.aio.insecure_channel(
                target,
                options=channel_options(self._max_message_bytes, target),
                interceptors=[_AsyncUnaryInterceptor(self._policy), _AsyncStreamInterceptor(self._policy)],
            )
            self._stub = self._stub_cls(self._channel)
        return self._channel

    @property
    def stub(self) -> StubT:
        """The service's stub; Unavailable naming the service when it is not configured."""
        if not self.target:
            raise self._policy.not_configured()
        self._open()
        assert self._stub is not None
        return self._stub

    async def health(self, timeout: float = 2.0, service: str = "") -> str:
        if not self.target:
            return "NOT_CONFIGURED"
        try:
            reply = await health_pb2_grpc.HealthStub(self._open()).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            return exc.code().name

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
