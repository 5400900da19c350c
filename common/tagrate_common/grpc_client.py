"""Clients for calling other tagrate services.

Every call goes through :class:`Backend` (threads) or :class:`AsyncBackend`
(asyncio), which always set a deadline, forward the current request id, count
and time the call, and turn gRPC failures into
:class:`~tagrate_common.errors.TagrateError` naming the service.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import Unavailable, from_rpc_error
from .grpc_server import grpc_options
from .logging import REQUEST_ID_HEADER, request_id_var
from .metrics import GRPC_CLIENT_HANDLED, GRPC_CLIENT_SECONDS

StubT = TypeVar("StubT")


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    # round_robin spreads calls over every address a name resolves to (a
    # headless Kubernetes Service lists one per pod); pick_first would pin
    # every call to one replica for the life of the HTTP/2 connection.
    return [*grpc_options(max_message_bytes), ("grpc.lb_policy_name", "round_robin")]


def _metadata() -> tuple[tuple[str, str], ...]:
    return ((REQUEST_ID_HEADER, request_id_var.get()),)


class _BackendBase(Generic[StubT]):
    def __init__(self, name: str, target: str, stub_cls: type[StubT], timeout: float, max_message_bytes: int) -> None:
        self.name = name
        self.target = target
        self.timeout = timeout
        self._stub_cls = stub_cls
        self._max_message_bytes = max_message_bytes

    def _not_configured(self) -> Unavailable:
        return Unavailable(f"the {self.name} service is not configured", f"{self.name}_unavailable")

    def _observe(self, method: str, code: grpc.StatusCode, start: float) -> None:
        GRPC_CLIENT_HANDLED.labels(self.name, method, code.name).inc()
        GRPC_CLIENT_SECONDS.labels(self.name, method).observe(time.perf_counter() - start)


class Backend(_BackendBase[StubT]):
    """A blocking client for one service. ``target`` "" means not configured:
    every call then fails with UNAVAILABLE naming the service."""

    def __init__(self, name: str, target: str, stub_cls: type[StubT], timeout: float, max_message_bytes: int) -> None:
        super().__init__(name, target, stub_cls, timeout, max_message_bytes)
        self._channel = grpc.insecure_channel(target, options=channel_options(max_message_bytes)) if target else None
        self.stub: StubT | None = stub_cls(self._channel) if self._channel else None

    def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        if self.stub is None:
            raise self._not_configured()
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            return getattr(self.stub, method)(request, timeout=timeout or self.timeout, metadata=_metadata())
        except grpc.RpcError as exc:
            code = exc.code()
            raise from_rpc_error(exc, self.name) from None
        finally:
            self._observe(method, code, start)

    def stream(self, method: str, request: Any, timeout: float | None = None) -> Iterator[Any]:
        """A server-streaming call; the deadline covers the whole stream."""
        if self.stub is None:
            raise self._not_configured()
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            yield from getattr(self.stub, method)(request, timeout=timeout or self.timeout, metadata=_metadata())
        except grpc.RpcError as exc:
            code = exc.code()
            raise from_rpc_error(exc, self.name) from None
        finally:
            self._observe(method, code, start)

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


class AsyncBackend(_BackendBase[StubT]):
    """The asyncio twin of :class:`Backend`, for the gateway. The channel is
    created lazily inside the running event loop."""

    def __init__(self, name: str, target: str, stub_cls: type[StubT], timeout: float, max_message_bytes: int) -> None:
        super().__init__(name, target, stub_cls, timeout, max_message_bytes)
        self._channel: grpc.aio.Channel | None = None
        self._stub: StubT | None = None

    @property
    def stub(self) -> StubT:
        if not self.target:
            raise self._not_configured()
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=channel_options(self._max_message_bytes))
            self._stub = self._stub_cls(self._channel)
        return self._stub

    async def call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        stub = self.stub
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            return await getattr(stub, method)(request, timeout=timeout or self.timeout, metadata=_metadata())
        except grpc.RpcError as exc:
            code = exc.code()
            raise from_rpc_error(exc, self.name) from None
        finally:
            self._observe(method, code, start)

    async def stream(self, method: str, request: Any, timeout: float | None = None) -> AsyncIterator[Any]:
        stub = self.stub
        start, code = time.perf_counter(), grpc.StatusCode.OK
        try:
            async for item in getattr(stub, method)(request, timeout=timeout or self.timeout, metadata=_metadata()):
                yield item
        except grpc.RpcError as exc:
            code = exc.code()
            raise from_rpc_error(exc, self.name) from None
        finally:
            self._observe(method, code, start)

    async def health(self, timeout: float = 2.0) -> str:
        if not self.target:
            return "NOT_CONFIGURED"
        self.stub  # noqa: B018 - creates the channel
        try:
            reply = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            return exc.code().name

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None
