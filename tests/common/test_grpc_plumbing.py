"""The shared gRPC bootstrap and client against a real server: error mapping
both ways, request ids, deadlines, size limits and graceful shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from tagrate_common.config import ServiceSettings
from tagrate_common.errors import DeadlineExceeded, NotFound, PayloadTooLarge, TagrateError, Unavailable
from tagrate_common.grpc_client import Backend
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.logging import request_id_var
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tests.support import free_port, health_status


class ScriptedTagger(tagger_pb2_grpc.TaggerServiceServicer):
    """Exercises the bootstrap: the first file name says what to do."""

    def Tag(self, request, context):
        action = request.images[0].filename if request.images else ""
        if action == "not_found":
            raise NotFound("no such thing as 'x'", "thing_not_found")
        if action == "crash":
            raise RuntimeError("secret internal detail")
        if action.startswith("sleep:"):
            time.sleep(float(action.split(":")[1]))
        return tagger_pb2.TagResponse(model_id=request_id_var.get())


def _start(max_upload: int = 1 << 20, grace: float = 5.0, notice: float = 0.0) -> tuple[GrpcServer, str]:
    settings = ServiceSettings(
        port=0,
        max_upload_bytes=max_upload,
        max_bulk_files=1,
        shutdown_grace_seconds=grace,
        shutdown_notice_seconds=notice,
    )
    server = GrpcServer(
        "scripted",
        settings,
        [(tagger_pb2_grpc.add_TaggerServiceServicer_to_server, ScriptedTagger(), "tagrate.tagger.v1.TaggerService")],
    )
    port = server.start()
    return server, f"127.0.0.1:{port}"


def _request(action: str, payload: bytes = b"") -> tagger_pb2.TagRequest:
    return tagger_pb2.TagRequest(images=[common_pb2.ImageFile(data=payload, filename=action)])


@pytest.fixture
def served():
    server, target = _start()
    client = Backend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, timeout=5, max_message_bytes=64 << 20)
    yield server, target, client
    client.close()
    server.stop(0)


def test_domain_errors_round_trip_with_their_code(served):
    _, _, client = served
    with pytest.raises(NotFound) as exc:
        client.call("Tag", _request("not_found"))
    assert exc.value.code == "thing_not_found"
    assert exc.value.message == "no such thing as 'x'"
    assert exc.value.http_status == 404


def test_unexpected_errors_hide_details_but_give_the_request_id(served):
    _, _, client = served
    token = request_id_var.set("req-crash-1")
    try:
        with pytest.raises(TagrateError) as exc:
            client.call("Tag", _request("crash"))
    finally:
        request_id_var.reset(token)
    assert exc.value.http_status == 500
    assert "secret" not in exc.value.message
    assert "req-crash-1" in exc.value.message


def test_request_id_reaches_the_server(served):
    _, _, client = served
    token = request_id_var.set("abc123")
    try:
        assert client.call("Tag", _request("echo")).model_id == "abc123"
    finally:
        request_id_var.reset(token)


def test_every_call_has_a_deadline(served):
    _, _, client = served
    with pytest.raises(DeadlineExceeded) as exc:
        client.call("Tag", _request("sleep:2"), timeout=0.2)
    assert exc.value.http_status == 504
    assert "scripted" in exc.value.message


def test_unreachable_service_is_named():
    client = Backend("tagger", f"127.0.0.1:{free_port()}", tagger_pb2_grpc.TaggerServiceStub, 2, 1 << 20)
    with pytest.raises(Unavailable) as exc:
        client.call("Tag", _request("echo"))
    assert exc.value.http_status == 503 and "tagger" in exc.value.message
    unconfigured = Backend("rater", "", tagger_pb2_grpc.TaggerServiceStub, 2, 1 << 20)
    with pytest.raises(Unavailable):
        unconfigured.call("Tag", _request("echo"))


def test_messages_over_the_upload_limit_are_refused():
    server, target = _start(max_upload=1000)
    client = Backend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, 5, 64 << 20)
    try:
        with pytest.raises(PayloadTooLarge):
            client.call("Tag", _request("echo", b"x" * (server.settings.max_message_bytes + 10)))
        assert client.call("Tag", _request("echo", b"x" * 900)).model_id  # within the limit
    finally:
        client.close()
        server.stop(0)


def test_graceful_shutdown_drains_in_flight_calls():
    server, target = _start(grace=10, notice=0.5)
    client = Backend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, 10, 1 << 20)
    result: dict[str, object] = {}

    def slow_call():
        try:
            result["reply"] = client.call("Tag", _request("sleep:1.5"))
        except TagrateError as exc:
            result["error"] = exc

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)  # the call is in flight
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    time.sleep(0.2)
    assert health_status(target) == "NOT_SERVING"  # still answering, but telling balancers to go away
    caller.join(10)
    stopper.join(15)
    assert "reply" in result, result.get("error")
    assert not stopper.is_alive()
    with pytest.raises(Unavailable):
        client.call("Tag", _request("echo"), timeout=1)
    client.close()
