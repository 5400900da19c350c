"""Internal gRPC calls carry TAGRATE_INTERNAL_TOKEN: a service started with
it refuses a call without it (UNAUTHENTICATED), answers health checks
without it, and a gateway configured with the same secret gets through."""

from __future__ import annotations

import inspect
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tagrate_common import grpc_client, grpc_server
from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import tokens_pb2, users_pb2
from tagrate_dataset.server import create_server
from tests.support import dataset_settings

from .conftest import GatewayServer, gateway_settings

SECRET = "internal-secret-for-the-tests-0123456789"


@pytest.fixture
def guarded(tmp_path: Path):
    settings = dataset_settings(tmp_path / "data", f"sqlite:///{tmp_path / 'db.sqlite'}", internal_token=SECRET)
    server = create_server(settings)
    addr = f"127.0.0.1:{server.start()}"
    try:
        yield addr, tmp_path
    finally:
        server.stop(0)
        grpc_client.use_internal_token(None)  # the server set this process's outgoing secret


def test_calls_without_the_secret_are_refused_and_health_still_answers(guarded) -> None:
    addr, _ = guarded
    with grpc.insecure_channel(addr) as channel:
        stub = DatasetStubs(channel)
        for metadata in ((), (("tagrate-internal-token", "wrong"),)):
            with pytest.raises(grpc.RpcError) as info:
                stub.users.ListUsers(users_pb2.ListUsersRequest(), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            stub.tokens.AuthenticateToken(tokens_pb2.AuthenticateTokenRequest(token_sha256="0" * 64), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.users.ListUsers(
            users_pb2.ListUsersRequest(), metadata=(("tagrate-internal-token", SECRET),), timeout=10
        )
        assert list(ok.users) == []
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_is_off_by_default(guarded) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    addr, _ = guarded
    with grpc.insecure_channel(addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([request]), metadata=(("tagrate-internal-token", SECRET),)))
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_gateway_sends_the_secret(guarded) -> None:
    addr, tmp_path = guarded
    gateway = GatewayServer(gateway_settings(addr, tmp_path / "gw", internal_token=SECRET)).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            assert http.get("/verifydatasets").status_code == 200
            assert http.get("/readyz").status_code == 200
    finally:
        gateway.stop()
    grpc_client.use_internal_token(None)
    gateway = GatewayServer(gateway_settings(addr, tmp_path / "gw2")).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            assert http.get("/verifydatasets").status_code != 200  # no secret: refused by the service
    finally:
        gateway.stop()


def test_the_secret_is_compared_in_constant_time() -> None:
    assert "hmac.compare_digest(" in inspect.getsource(grpc_server._InternalTokenInterceptor)
    from tagrate_gateway import auth

    assert "hmac.compare_digest(" in inspect.getsource(auth.Authenticator.verify)
