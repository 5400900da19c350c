"""The tagger over real gRPC: real photos in, tags out; bulk order; every
kind of bad input with the right status and a message naming the file;
concurrency; a full queue; health only after warm-up."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from tagrate_common.errors import (
    InvalidArgument,
    Overloaded,
    PayloadTooLarge,
    TagrateError,
    UnsupportedImage,
    from_rpc_error,
)
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tagrate_tagger.server import create_server
from tests.imagefactory import bomb_png, make_image, truncated_jpeg
from tests.support import ServiceProcess, free_port, health_status

from .conftest import PHOTOS, tagger_settings
from .modelfiles import write_wd_v3_dir

DEADLINE = 60.0


def request(*files: tuple[bytes, str], **params) -> tagger_pb2.TagRequest:
    return tagger_pb2.TagRequest(images=[common_pb2.ImageFile(data=d, filename=n) for d, n in files], **params)


def names(tags: tagger_pb2.ImageTags) -> list[str]:
    return [t.name for t in tags.tags]


def failure(stub, req: tagger_pb2.TagRequest) -> tuple[grpc.StatusCode, TagrateError]:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Tag(req, timeout=DEADLINE)
    return caught.value.code(), from_rpc_error(caught.value, "tagger")


def test_model_info_describes_the_default_model(tagger_stub, default_model) -> None:
    info = tagger_stub.GetModelInfo(tagger_pb2.GetModelInfoRequest(), timeout=DEADLINE)
    assert info.model_id == default_model.model_id
    assert (info.architecture, info.format, info.label_count) == ("efficientnet-lite0", "torch-state-dict", 1000)
    assert info.default_threshold == pytest.approx(0.1)


def test_a_photo_gets_sensible_tags(tagger_stub, photos, default_model) -> None:
    reply = tagger_stub.Tag(request((photos["chelsea"], "chelsea.jpg")), timeout=DEADLINE)
    assert reply.model_id == default_model.model_id
    [tags] = reply.results
    assert names(tags)[0] in {"tabby_cat", "tiger_cat", "egyptian_mau"}
    assert "tabby_cat" in names(tags)
    scores = [t.score for t in tags.tags]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.1


def test_bulk_results_keep_upload_order(tagger_stub, photos) -> None:
    order = ["coffee", "chelsea", "camera", "rocket", "coffee"]
    reply = tagger_stub.Tag(
        request(*[(photos[p], f"{p}.jpg") for p in order], threshold=0.0, limit=5), timeout=DEADLINE
    )
    assert len(reply.results) == len(order)
    for photo, tags in zip(order, reply.results, strict=True):
        assert PHOTOS[photo] in names(tags), photo
        assert len(tags.tags) == 5
    assert names(reply.results[0]) == names(reply.results[4])


def test_threshold_and_limit(tagger_stub, photos) -> None:
    [strict] = tagger_stub.Tag(request((photos["chelsea"], "c.jpg"), threshold=0.99), timeout=DEADLINE).results
    assert list(strict.tags) == []
    [everything] = tagger_stub.Tag(request((photos["coffee"], "c.jpg"), threshold=0.0), timeout=DEADLINE).results
    assert len(everything.tags) == 1000
    [top1] = tagger_stub.Tag(request((photos["coffee"], "c.jpg"), threshold=0.0, limit=1), timeout=DEADLINE).results
    assert names(top1) == ["espresso"]


def test_concurrent_calls_get_the_same_tags_as_single_calls(tagger_stub, photos) -> None:
    order = sorted(PHOTOS) * 6
    single = {p: tagger_stub.Tag(request((photos[p], p)), timeout=DEADLINE).results[0] for p in PHOTOS}
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda p: tagger_stub.Tag(request((photos[p], p)), timeout=DEADLINE), order))
    for photo, reply in zip(order, replies, strict=True):
        [tags] = reply.results
        assert names(tags) == names(single[photo])
        # Batched float arithmetic may differ in the last bits, never more.
        assert [t.score for t in tags.tags] == pytest.approx([t.score for t in single[photo].tags], abs=1e-4)


# -- bad input ------------------------------------------------------------------


def test_a_text_file_fails_the_call_naming_it(tagger_stub, photos) -> None:
    code, error = failure(tagger_stub, request((photos["coffee"], "ok.jpg"), (b"just some notes\n", "notes.txt")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error, UnsupportedImage) and error.http_status == 415
    assert error.message.startswith("file 2 ('notes.txt') is not a JPEG, PNG")


def test_an_empty_file_is_named(tagger_stub) -> None:
    code, error = failure(tagger_stub, request((b"", "empty.png")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and isinstance(error, UnsupportedImage)
    assert error.message.startswith("file 1 ('empty.png') is empty")


def test_a_file_without_a_name_is_named_by_position(tagger_stub, photos) -> None:
    _, error = failure(tagger_stub, request((photos["coffee"], "a.jpg"), (photos["coffee"], "b.jpg"), (b"x", "")))
    assert error.message.startswith("file 3 is ") and "''" not in error.message


def test_a_truncated_jpeg_is_refused(tagger_stub, photos) -> None:
    _, error = failure(tagger_stub, request((photos["coffee"], "ok.jpg"), (truncated_jpeg(), "cut.jpg")))
    assert isinstance(error, UnsupportedImage)
    assert re.match(r"file 2 \('cut\.jpg'\) is damaged or truncated", error.message)


def test_a_decompression_bomb_is_refused_before_decoding(tagger_stub) -> None:
    code, error = failure(tagger_stub, request((bomb_png(), "bomb.png")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error, PayloadTooLarge) and error.http_status == 413
    assert error.message.startswith("file 1 ('bomb.png') is 20000x20000 pixels")


def test_too_many_files(tagger_stub) -> None:
    small = make_image("PNG", (16, 16))
    code, error = failure(tagger_stub, request(*[(small, f"{i}.png") for i in range(9)]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error, PayloadTooLarge) and error.code == "too_many_files"
    assert "at most 8" in error.message


def test_no_files(tagger_stub) -> None:
    _, error = failure(tagger_stub, request())
    assert isinstance(error, InvalidArgument) and "no images" in error.message


@pytest.mark.parametrize("threshold", [-0.1, 1.5, float("nan")])
def test_threshold_outside_0_to_1(tagger_stub, photos, threshold) -> None:
    code, error = failure(tagger_stub, request((photos["coffee"], "c.jpg"), threshold=threshold))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error, InvalidArgument) and error.code == "invalid_threshold"
    assert "'threshold' must be a number between 0 and 1" in error.message


def test_huge_limit(tagger_stub, photos) -> None:
    code, error = failure(tagger_stub, request((photos["coffee"], "c.jpg"), limit=4_000_000_000))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error, InvalidArgument) and "'limit' must be between 1 and 1000" in error.message


def test_bad_calls_leave_the_server_working(tagger_stub, photos) -> None:
    failure(tagger_stub, request((photos["coffee"], "ok.jpg"), (truncated_jpeg(), "cut.jpg")))
    reply = tagger_stub.Tag(request((photos["coffee"], "c.jpg")), timeout=DEADLINE)
    assert names(reply.results[0])[0] == "espresso"


# -- queue, other models, process ----------------------------------------------


def test_a_full_queue_answers_resource_exhausted(default_model) -> None:
    # The batch never fills (64 images) and the queue delay is long, so queued
    # images stay queued: the third of a 3-image call finds the queue full.
    server = create_server(
        tagger_settings(max_queue_size=2, max_batch_size=64, max_queue_delay_ms=10_000), model=default_model
    )
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tagger_pb2_grpc.TaggerServiceStub(channel)
            files = [(make_image("PNG", (32, 32), seed), f"{seed}.png") for seed in range(3)]
            code, error = failure(stub, request(*files))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert isinstance(error, Overloaded) and error.http_status == 503
            assert "overloaded" in error.message
    finally:
        server.stop(0)


def test_a_wd_v3_model_served_over_grpc(tmp_path) -> None:
    folder = write_wd_v3_dir(tmp_path / "wd-test-v3")
    server = create_server(tagger_settings(model_dir=folder))
    port = server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = tagger_pb2_grpc.TaggerServiceStub(channel)
            info = stub.GetModelInfo(tagger_pb2.GetModelInfoRequest(), timeout=DEADLINE)
            assert info.format == "onnx-wd-v3" and info.label_count == 9
            assert info.default_threshold == pytest.approx(0.35)
            image = make_image("PNG", (48, 32), 0)
            reply = stub.Tag(request((image, "a.png"), (image, "again.png")), timeout=DEADLINE)
            assert reply.model_id == info.model_id and reply.model_id.startswith("wd-test-v3@")
            assert names(reply.results[0]) == names(reply.results[1])
            assert sum(n.startswith("rating:") for n in names(reply.results[0])) == 1
    finally:
        server.stop(0)


def test_the_service_process_reports_serving_only_after_warm_up(tmp_path) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    assert health_status(target, 0.5) != "SERVING"
    env = {"TAGGER_PORT": str(port), "TAGGER_METRICS_PORT": "0", "TAGGER_DEVICE": "cpu", "TAGRATE_LOG_LEVEL": "INFO"}
    service = ServiceProcess("tagrate_tagger", env, tmp_path / "tagger.log", target).start(timeout=120)
    try:
        log = service.log()
        assert log.index("warmed up") < log.index("listening on")
        with grpc.insecure_channel(target) as channel:
            info = tagger_pb2_grpc.TaggerServiceStub(channel).GetModelInfo(
                tagger_pb2.GetModelInfoRequest(), timeout=DEADLINE
            )
            assert info.label_count == 1000
    finally:
        assert service.terminate() == 0


def test_the_service_process_exits_with_a_reason_for_a_bad_model_dir(tmp_path) -> None:
    port = free_port()
    env = {"TAGGER_PORT": str(port), "TAGGER_METRICS_PORT": "0", "TAGGER_MODEL_DIR": str(tmp_path / "missing")}
    service = ServiceProcess("tagrate_tagger", env, tmp_path / "tagger.log", f"127.0.0.1:{port}")
    with pytest.raises(RuntimeError, match="exited with 1") as exited:
        service.start(timeout=120)
    assert "cannot load the tagger model" in str(exited.value) and "does not exist" in str(exited.value)
