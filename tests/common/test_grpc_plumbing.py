"""The shared gRPC bootstrap and client against a real server: error mapping
both ways, request ids, deadlines, size limits and graceful shutdown, for
the blocking and the asyncio client, unary and server-streaming calls made
through the generated stubs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from prometheus_client import REGISTRY

from tagrate_common.config import ServiceSettings
from tagrate_common.errors import DeadlineExceeded, NotFound, PayloadTooLarge, TagrateError, Unavailable
from tagrate_common.grpc_client import AsyncBackend, Backend
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.logging import request_id_var
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc, training_data_pb2, training_data_pb2_grpc
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


class ScriptedStream(training_data_pb2_grpc.TrainingDataServiceServicer):
    """A server stream: ``user`` is ``N:action`` -- N chunks (the first
    carrying the request id), each after 0.15 s, then ``action``."""

    def StreamTrainingData(self, request, context):
        count, _, action = request.user.partition(":")
        for i in range(int(count)):
            time.sleep(0.15)
            yield training_data_pb2.TrainingDataChunk(snapshot_id=request_id_var.get() if i == 0 else "", total=i)
        if action == "not_found":
            raise NotFound("no such user 'x'", "user_not_found")


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
        [
            (tagger_pb2_grpc.add_TaggerServiceServicer_to_server, ScriptedTagger(), "tagrate.tagger.v1.TaggerService"),
            (
                training_data_pb2_grpc.add_TrainingDataServiceServicer_to_server,
                ScriptedStream(),
                "tagrate.dataset.v1.TrainingDataService",
            ),
        ],
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
        client.stub.Tag(_request("not_found"))
    assert exc.value.code == "thing_not_found"
    assert exc.value.message == "no such thing as 'x'"
    assert exc.value.http_status == 404


def test_unexpected_errors_hide_details_but_give_the_request_id(served):
    _, _, client = served
    token = request_id_var.set("req-crash-1")
    try:
        with pytest.raises(TagrateError) as exc:
            client.stub.Tag(_request("crash"))
    finally:
        request_id_var.reset(token)
    assert exc.value.http_status == 500
    assert "secret" not in exc.value.message
    assert "req-crash-1" in exc.value.message


def test_request_id_reaches_the_server(served):
    _, _, client = served
    token = request_id_var.set("abc123")
    try:
        assert client.stub.Tag(_request("echo")).model_id == "abc123"
    finally:
        request_id_var.reset(token)


def test_every_call_has_a_deadline(served):
    _, _, client = served
    with pytest.raises(DeadlineExceeded) as exc:
        client.stub.Tag(_request("sleep:2"), timeout=0.2)
    assert exc.value.http_status == 504
    assert "scripted" in exc.value.message


def test_unreachable_service_is_named():
    client = Backend("tagger", f"127.0.0.1:{free_port()}", tagger_pb2_grpc.TaggerServiceStub, 2, 1 << 20)
    with pytest.raises(Unavailable) as exc:
        client.stub.Tag(_request("echo"))
    assert exc.value.http_status == 503 and "tagger" in exc.value.message
    unconfigured = Backend("rater", "", tagger_pb2_grpc.TaggerServiceStub, 2, 1 << 20)
    with pytest.raises(Unavailable):
        unconfigured.stub.Tag(_request("echo"))


def test_messages_over_the_upload_limit_are_refused():
    server, target = _start(max_upload=1000)
    client = Backend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, 5, 64 << 20)
    try:
        with pytest.raises(PayloadTooLarge):
            client.stub.Tag(_request("echo", b"x" * (server.settings.max_message_bytes + 10)))
        assert client.stub.Tag(_request("echo", b"x" * 900)).model_id  # within the limit
    finally:
        client.close()
        server.stop(0)


def test_graceful_shutdown_drains_in_flight_calls():
    server, target = _start(grace=10, notice=0.5)
    client = Backend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, 10, 1 << 20)
    result: dict[str, object] = {}

    def slow_call():
        try:
            result["reply"] = client.stub.Tag(_request("sleep:1.5"))
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
        client.stub.Tag(_request("echo"), timeout=1)
    client.close()


def _handled(service: str, method: str, code: str) -> float:
    labels = {"target_service": service, "method": method, "code": code}
    return REGISTRY.get_sample_value("tagrate_grpc_client_handled_total", labels) or 0.0


def test_the_backend_deadline_applies_by_default_and_a_call_can_override_it():
    server, target = _start()
    client = Backend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, 0.2, 1 << 20)
    try:
        with pytest.raises(DeadlineExceeded) as exc:
            client.stub.Tag(_request("sleep:0.6"))
        assert "scripted" in exc.value.message
        assert client.stub.Tag(_request("sleep:0.6"), timeout=5).model_id
    finally:
        client.close()
        server.stop(0)


def test_calls_are_counted_by_method_and_code(served):
    _, _, client = served
    ok, not_found = _handled("scripted", "Tag", "OK"), _handled("scripted", "Tag", "NOT_FOUND")
    client.stub.Tag(_request("echo"))
    with pytest.raises(NotFound):
        client.stub.Tag(_request("not_found"))
    assert _handled("scripted", "Tag", "OK") == ok + 1
    assert _handled("scripted", "Tag", "NOT_FOUND") == not_found + 1


def _stream_request(script: str) -> training_data_pb2.StreamTrainingDataRequest:
    return training_data_pb2.StreamTrainingDataRequest(user=script)


def test_a_stream_forwards_the_request_id_and_maps_a_mid_stream_error():
    server, target = _start()
    client = Backend("streamer", target, training_data_pb2_grpc.TrainingDataServiceStub, 5, 1 << 20)
    token = request_id_var.set("stream-req-1")
    try:
        chunks = list(client.stub.StreamTrainingData(_stream_request("2:")))
        assert [c.total for c in chunks] == [0, 1] and chunks[0].snapshot_id == "stream-req-1"
        assert _handled("streamer", "StreamTrainingData", "OK") >= 1
        received = []
        with pytest.raises(NotFound) as exc:
            received.extend(client.stub.StreamTrainingData(_stream_request("2:not_found")))
        assert len(received) == 2 and exc.value.code == "user_not_found"
    finally:
        request_id_var.reset(token)
        client.close()
        server.stop(0)


def test_the_deadline_covers_the_whole_stream_and_cancel_passes_through():
    server, target = _start()
    # Every chunk comes well within 0.5 s, the whole stream does not.
    client = Backend("streamer", target, training_data_pb2_grpc.TrainingDataServiceStub, 0.5, 1 << 20)
    try:
        with pytest.raises(DeadlineExceeded) as exc:
            list(client.stub.StreamTrainingData(_stream_request("6:")))
        assert "streamer" in exc.value.message
        assert len(list(client.stub.StreamTrainingData(_stream_request("6:"), timeout=5))) == 6
        call = client.stub.StreamTrainingData(_stream_request("6:"), timeout=5)
        next(call)
        assert call.cancel()
        with pytest.raises(TagrateError):
            next(call)
    finally:
        client.close()
        server.stop(0)


def test_async_backend_through_the_stub():
    """Everything the blocking client promises, for the asyncio client the
    gateway uses: gRPC runs aio interceptors in a task of their own, so this
    checks that mapped errors and the request id survive the hop."""
    server, target = _start()

    async def run() -> None:
        client = AsyncBackend("scripted", target, tagger_pb2_grpc.TaggerServiceStub, 0.3, 1 << 20)
        streams = AsyncBackend("streamer", target, training_data_pb2_grpc.TrainingDataServiceStub, 0.5, 1 << 20)
        token = request_id_var.set("aio-req-7")
        try:
            assert (await client.stub.Tag(_request("echo"))).model_id == "aio-req-7"
            with pytest.raises(NotFound) as not_found:
                await client.stub.Tag(_request("not_found"))
            assert not_found.value.code == "thing_not_found"
            with pytest.raises(DeadlineExceeded) as late:
                await client.stub.Tag(_request("sleep:0.8"))
            assert "scripted" in late.value.message
            assert (await client.stub.Tag(_request("sleep:0.5"), timeout=5)).model_id == "aio-req-7"
            assert await client.health() == "SERVING"

            chunks = [c async for c in streams.stub.StreamTrainingData(_stream_request("2:"))]
            assert [c.total for c in chunks] == [0, 1] and chunks[0].snapshot_id == "aio-req-7"
            received = []
            with pytest.raises(NotFound):
                async for chunk in streams.stub.StreamTrainingData(_stream_request("2:not_found")):
                    received.append(chunk)
            assert len(received) == 2
            with pytest.raises(DeadlineExceeded):
                async for _ in streams.stub.StreamTrainingData(_stream_request("6:")):
                    pass
        finally:
            request_id_var.reset(token)
            await client.close()
            await streams.close()

        unreachable = AsyncBackend("tagger", f"127.0.0.1:{free_port()}", tagger_pb2_grpc.TaggerServiceStub, 2, 1 << 20)
        with pytest.raises(Unavailable) as exc:
            await unreachable.stub.Tag(_request("echo"))
        assert "tagger" in exc.value.message
        assert await unreachable.health(0.5) != "SERVING"
        await unreachable.close()
        unconfigured = AsyncBackend("rater", "", tagger_pb2_grpc.TaggerServiceStub, 2, 1 << 20)
        with pytest.raises(Unavailable) as exc:
            await unconfigured.stub.Tag(_request("echo"))
        assert exc.value.code == "rater_unavailable"
        assert await unconfigured.health() == "NOT_CONFIGURED"

    ok, deadline = _handled("scripted", "Tag", "OK"), _handled("scripted", "Tag", "DEADLINE_EXCEEDED")
    try:
        asyncio.run(run())
    finally:
        server.stop(0)
    assert _handled("scripted", "Tag", "OK") == ok + 2
    assert _handled("scripted", "Tag", "DEADLINE_EXCEEDED") == deadline + 1
    assert _handled("scripted", "Check", "OK") == 0  # health probes are not counted as traffic
