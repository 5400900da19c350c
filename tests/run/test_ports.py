"""A service's ports are its own: gRPC's default SO_REUSEPORT is off, so a
port already in use is a clear start-up error naming the port and the setting
(in-process and as ``python -m tagrate_dataset`` runs), unless ``reuse_port``
asks for sharing. Also: client errors are logged at INFO, not WARNING."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from pydantic_settings import SettingsConfigDict

from tagrate_common.config import ServiceSettings
from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.grpc_server import GrpcServer, PortInUse
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tests.support import REPO_ROOT, free_port

from .supervised import listening_socket


class ScratchSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SCRATCH_")


class Tagger(tagger_pb2_grpc.TaggerServiceServicer):
    """The first file name says how the call ends."""

    def Tag(self, request, context):
        action = request.images[0].filename
        if action == "not_found":
            raise NotFound("no such image", "image_not_found")
        if action == "invalid":
            raise InvalidArgument("bad threshold", "invalid_threshold")
        if action == "crash":
            raise RuntimeError("boom")
        return tagger_pb2.TagResponse(model_id="m")


def _server(**settings: object) -> GrpcServer:
    values: dict[str, object] = {"port": 0, "metrics_port": 0, **settings}
    return GrpcServer(
        "scratch",
        ScratchSettings(**values),
        [(tagger_pb2_grpc.add_TaggerServiceServicer_to_server, Tagger(), "tagrate.tagger.v1.TaggerService")],
    )


def test_a_grpc_port_in_use_names_the_port_and_the_setting() -> None:
    with listening_socket() as port, pytest.raises(PortInUse) as caught:
        _server(port=port).start()
    assert str(caught.value) == (
        f"cannot listen on 127.0.0.1:{port}: the port is in use "
        "(set SCRATCH_PORT, or TAGRATE_RUN_BASE_PORT under make run)"
    )


def test_a_second_server_cannot_share_a_port_unless_reuse_port_is_set() -> None:
    first = _server()
    port = first.start()
    try:
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port}: the port is in use"):
            _server(port=port).start()
    finally:
        first.stop(0)
    shared = [_server(reuse_port=True)]
    port = shared[0].start()
    try:
        shared.append(_server(port=port, reuse_port=True))
        assert shared[1].start() == port
    finally:
        for server in shared:
            server.stop(0)


def test_a_metrics_port_in_use_names_its_setting_and_leaves_the_grpc_port_free() -> None:
    grpc_port = free_port()
    with listening_socket() as metrics_port, pytest.raises(PortInUse) as caught:
        _server(port=grpc_port, metrics_port=metrics_port).start()
    assert f"cannot listen on 127.0.0.1:{metrics_port}: the port is in use (set SCRATCH_METRICS_PORT" in str(
        caught.value
    )
    retry = _server(port=grpc_port)  # the failed start did not bind it
    assert retry.start() == grpc_port
    retry.stop(0)


def test_the_dataset_service_on_a_taken_port_exits_with_the_reason(tmp_path: Path) -> None:
    with listening_socket() as port:
        env = {
            "DATASET_PORT": str(port),
            "DATASET_METRICS_PORT": "0",
            "TAGRATE_DATA_DIR": str(tmp_path),
            "DATASET_TAGGER_ADDR": "",
            "DATASET_RATER_ADDR": "",
        }
        done = subprocess.run(
            [sys.executable, "-m", "tagrate_dataset"],
            env={**_clean_environ(), **env},
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use (set DATASET_PORT" in done.stderr
    assert "Traceback" not in done.stderr


def _clean_environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DATASET_")}


@pytest.fixture
def served() -> Iterator[tagger_pb2_grpc.TaggerServiceStub]:
    server = _server()
    port = server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield tagger_pb2_grpc.TaggerServiceStub(channel)
    server.stop(0)


@pytest.mark.parametrize(
    ("action", "code", "level"),
    [
        ("ok", grpc.StatusCode.OK, logging.DEBUG),
        ("not_found", grpc.StatusCode.NOT_FOUND, logging.INFO),
        ("invalid", grpc.StatusCode.INVALID_ARGUMENT, logging.INFO),
        ("crash", grpc.StatusCode.INTERNAL, logging.WARNING),
    ],
)
def test_rpc_log_levels_success_debug_client_errors_info(
    served, caplog, action: str, code: grpc.StatusCode, level: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="tagrate_common.grpc_server")
    request = tagger_pb2.TagRequest(images=[common_pb2.ImageFile(data=b"", filename=action)])
    try:
        served.Tag(request, timeout=5)
        got = grpc.StatusCode.OK
    except grpc.RpcError as exc:
        got = exc.code()
    assert got == code
    records = [r for r in caplog.records if r.getMessage() == f"rpc Tag {code.name}"]
    assert [r.levelno for r in records] == [level]
