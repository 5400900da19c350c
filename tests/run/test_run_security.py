"""``make run`` with access control on (issue 23, findings 1 and 11): the
internal gRPC ports take no call without the per-run secret, serve no
reflection, the services' metrics ports are closed, the secret is in no
process's environment (a 0600 file named by TAGRATE_INTERNAL_TOKEN_FILE),
and the gateway's admin token reaches the gateway only."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tagrate_common.protos import tokens_pb2, tokens_pb2_grpc

from .supervised import PORT_OFFSETS, RunStack, free_port_block, http

pytestmark = pytest.mark.slow

ADMIN_TOKEN = "run-security-admin-token-0123456789abcdef"
METRICS_OFFSET = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunStack]:
    root = tmp_path_factory.mktemp("run")
    env = {
        "GATEWAY_AUTH": "on",
        "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "TAGGER_TORCH_THREADS": "1",
        "RATER_TORCH_THREADS": "1",
    }
    env_clean = {k: v for k, v in os.environ.items() if k.startswith("TAGRATE_INTERNAL_TOKEN")}
    assert not env_clean, "unset TAGRATE_INTERNAL_TOKEN* to run this test (it checks the per-run secret)"
    running = RunStack(root / "data", root / "run.log", free_port_block(), env).start()
    try:
        yield running.wait_running()
    finally:
        running.kill_everything()


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_internal_ports_refuse_calls_without_the_secret(stack: RunStack) -> None:
    with http(stack) as client:
        assert client.get("/readyz").status_code == 200
        assert client.get("/whoami", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).json()["admin"] is True
    for name in ("dataset", "tagger", "rater", "trainer"):
        with grpc.insecure_channel(f"127.0.0.1:{stack.port(name)}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes still work
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                list(
                    reflection.ServerReflectionInfo(
                        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                    )
                )
            assert refused.value.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED)
    with grpc.insecure_channel(f"127.0.0.1:{stack.port('dataset')}") as channel:
        stub = tokens_pb2_grpc.TokenServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateToken(tokens_pb2.CreateTokenRequest(token_sha256="0" * 64, admin=True), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            stub.CreateToken(
                tokens_pb2.CreateTokenRequest(token_sha256="0" * 64, admin=True),
                timeout=10,
                metadata=(("tagrate-internal-token", "guessed"),),
            )
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_service_metrics_ports_are_closed(stack: RunStack) -> None:
    for name, offset in PORT_OFFSETS.items():
        if name == "gateway":
            continue
        with socket.socket() as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", stack.base_port + offset + METRICS_OFFSET)) != 0, name
    assert any("access control is on" in line for line in stack.run_lines())


def test_secrets_are_in_no_childs_environment(stack: RunStack) -> None:
    pids = stack.pids()
    assert set(pids) == set(PORT_OFFSETS)
    token_file = stack.data_dir.resolve() / "run" / "internal-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    secret = token_file.read_text().strip()
    assert len(secret) >= 32
    for name, pid in pids.items():
        env = _environ(pid)
        assert env.get("TAGRATE_INTERNAL_TOKEN_FILE") == str(token_file), name
        assert "TAGRATE_INTERNAL_TOKEN" not in env, name
        assert not any(secret in value for value in env.values()), name
        if name == "gateway":
            assert env.get("GATEWAY_ADMIN_TOKEN") == ADMIN_TOKEN
        else:
            assert "GATEWAY_ADMIN_TOKEN" not in env and not any(ADMIN_TOKEN in v for v in env.values()), name


def test_the_secret_file_is_removed_at_stop(stack: RunStack) -> None:
    token_file = stack.data_dir.resolve() / "run" / "internal-token"
    assert token_file.exists()
    assert stack.stop() == 0
    assert not token_file.exists()
