"""The rater over real gRPC: the real EfficientNet-Lite0 features, a real
dataset service saying which users exist, heads published through the real
PublishHead RPC."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tagrate_common.errors import TagrateError, from_rpc_error
from tagrate_common.protos import common_pb2, rater_pb2
from tagrate_common.vision.rating_heads import serialize_weights
from tests.imagefactory import bomb_png, make_image, truncated_jpeg
from tests.support import ServiceProcess, free_port

from .conftest import DEADLINE, DIMENSIONS, USERS, linear_weights, sigmoid


def failure(call, *args, **kwargs) -> tuple[grpc.StatusCode, TagrateError]:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    return caught.value.code(), from_rpc_error(caught.value, "rater")


def ratings(reply: rater_pb2.RateResponse) -> dict[str, tuple[str, str, list[float]]]:
    return {u.user: (u.model, u.model_version, list(u.ratings)) for u in reply.users}


def test_extractor_info_and_embed_give_the_pooled_features(rater, photos, default_model) -> None:
    info = rater.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE)
    assert info.extractor_id == f"{default_model.model_id}:pooled" and info.dimensions == DIMENSIONS
    vectors = rater.embed(photos["chelsea"], photos["coffee"], photos["chelsea"])
    assert vectors.shape == (3, DIMENSIONS)
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)  # batch position: rounding only
    assert np.abs(vectors[0] - vectors[1]).max() > 0.1  # different photos, different vectors
    from tagrate_common.images import ImageLimits, decode_image

    image = decode_image(photos["coffee"], "c.jpg", ImageLimits(1 << 24, 1 << 26))
    direct = default_model.forward_features(default_model.preprocess(image)[None])[0]
    np.testing.assert_allclose(vectors[1], direct, atol=1e-5)


def test_a_published_head_changes_only_that_users_answer(rater, photos) -> None:
    rater.publish("all", linear_weights(0.0))
    before = ratings(rater.rate("all", photos["chelsea"]))
    assert set(before) == set(USERS) and all(model == "global" for model, _, _ in before.values())

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.05, DIMENSIONS)
    published = rater.publish("bob", linear_weights(0.3, weight), snapshot_id="bob:1", metrics={"spearman": 0.5})
    assert published.user == "bob" and published.version.startswith("v1-") and published.kind == "linear"
    assert published.created_at.seconds > 0 and dict(published.metrics) == {"spearman": 0.5}
    trained_at = Timestamp(seconds=1_790_000_000)  # a trainer may say when it trained the head
    carol = rater.publish("carol", linear_weights(0.0), created_at=trained_at)
    assert carol.created_at == trained_at and carol.snapshot_id == ""

    after = ratings(rater.rate("all", photos["chelsea"]))
    unchanged = set(USERS) - {"bob", "carol"}
    assert {u: after[u] for u in unchanged} == {u: before[u] for u in unchanged}
    model, version, [rating] = after["bob"]
    assert (model, version) == ("personal", published.version)
    features = rater.embed(photos["chelsea"])[0]
    assert rating == pytest.approx(float(sigmoid(features @ weight + 0.3)), abs=1e-5)
    assert rating != pytest.approx(before["bob"][2][0], abs=1e-3)


def test_all_gives_each_user_what_a_one_user_call_gives(rater, photos) -> None:
    rng = np.random.default_rng(1)
    rater.publish("all", linear_weights(-0.2, rng.normal(0, 0.05, DIMENSIONS)))
    rater.publish("alice", linear_weights(0.1, rng.normal(0, 0.05, DIMENSIONS)))
    mlp = {
        "mean": rng.normal(0, 0.1, DIMENSIONS),
        "std": rng.uniform(0.5, 1.5, DIMENSIONS),
        "w1": rng.normal(0, 0.05, (8, DIMENSIONS)),
        "b1": rng.normal(0, 0.1, 8),
        "w2": rng.normal(0, 0.5, 8),
        "b2": np.array(0.2),
    }
    rater.publish("1234567890", serialize_weights(mlp), kind="mlp")
    files = [photos["chelsea"], photos["astronaut"], photos["rocket"]]
    everyone = rater.rate("all", *files)
    assert [u.user for u in everyone.users] == sorted(USERS)
    for entry in everyone.users:
        [alone] = rater.rate(entry.user, *files).users
        assert (alone.user, alone.model, alone.model_version) == (entry.user, entry.model, entry.model_version)
        np.testing.assert_allclose(alone.ratings, entry.ratings, atol=1e-6)
    models = {u.user: u.model for u in everyone.users}
    assert models == {"1234567890": "personal", "alice": "personal", "bob": "global", "carol": "global"}


def test_global_fallback_no_model_and_unknown_users(rater, photos) -> None:
    code, error = failure(rater.rate, "alice", photos["coffee"])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.code == "no_model"
    assert "no rating model exists yet for user 'alice'" in error.message and "/trainuser" in error.message
    code, error = failure(rater.rate, "all", photos["coffee"])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.code == "no_model"

    rater.publish("alice", linear_weights(1.0))
    code, error = failure(rater.rate, "bob", photos["coffee"])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "'bob'" in error.message
    # Without a global head, "all" lists only the users who have their own.
    assert [u.user for u in rater.rate("all", photos["coffee"]).users] == ["alice"]

    rater.publish("all", linear_weights(-1.0))
    [bob] = rater.rate("bob", photos["coffee"]).users
    assert bob.model == "global" and bob.ratings[0] == pytest.approx(float(sigmoid(-1.0)), abs=1e-6)

    for unknown in ("zoe", "Alice", "999"):
        code, error = failure(rater.rate, unknown, photos["coffee"])
        assert code == grpc.StatusCode.NOT_FOUND and error.code == "user_not_found" and f"'{unknown}'" in error.message


def test_heads_survive_a_restart(start_rater, photos, tmp_path) -> None:
    first = start_rater(tmp_path / "kept")
    version = first.publish("carol", linear_weights(0.7)).version
    first.publish("all", linear_weights(-0.7))
    expected = ratings(first.rate("all", photos["rocket"]))
    first.stop()

    second = start_rater(tmp_path / "kept")
    listed = second.stub.ListHeads(rater_pb2.ListHeadsRequest(), timeout=DEADLINE).heads
    assert [(h.user, h.kind) for h in listed] == [("all", "linear"), ("carol", "linear")]
    assert listed[1].version == version
    assert ratings(second.rate("all", photos["rocket"])) == expected


def test_a_head_for_another_extractor_or_malformed_is_refused(rater, photos) -> None:
    kept = rater.publish("alice", linear_weights(0.4))
    code, error = failure(rater.publish, "alice", linear_weights(3.0), extractor_id="other-model@abc:pooled")
    assert code == grpc.StatusCode.FAILED_PRECONDITION and error.code == "extractor_mismatch"
    assert "other-model@abc:pooled" in error.message and rater.extractor_id in error.message

    bad = [
        (serialize_weights({"weight": np.zeros(512), "bias": np.array(0.0)}), "linear", "1280 dimensions"),
        (linear_weights(0.0), "mlp", "missing w1"),
        (b"junk", "linear", "torch.save"),
        (linear_weights(0.0), "forest", "'kind'"),
    ]
    for weights, kind, words in bad:
        code, error = failure(rater.publish, "alice", weights, kind)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and words in error.message, error.message
    code, error = failure(rater.publish, "bad/name", linear_weights(0.0))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "metadata.user" in error.message

    [alice] = rater.rate("alice", photos["coffee"]).users
    assert alice.model_version == kept.version
    assert alice.ratings[0] == pytest.approx(float(sigmoid(0.4)), abs=1e-6)


def test_hot_swap_never_fails_a_request_nor_mixes_heads(rater, photos) -> None:
    """Round k's heads rate every image sigmoid(bias_k), so the round each
    rating came from can be read off it. Heads are published round by round
    in the order global, alice, bob while clients keep rating; every answer
    must come from one moment of that sequence: one round per user for all
    images, and rounds all >= alice >= bob >= all - 1."""
    biases = [round(-2.0 + 0.25 * k, 2) for k in range(13)]
    round_of = {round(float(sigmoid(b)), 5): k for k, b in enumerate(biases)}
    subjects = ["all", "alice", "bob"]  # carol and 1234567890 are served by the global head
    for subject in subjects:
        rater.publish(subject, linear_weights(biases[0]))
    answered = threading.Condition()
    answers: list[rater_pb2.RateResponse] = []
    done = threading.Event()
    versions: dict[str, int] = {}  # alice's head versions -> their round

    def publisher() -> None:
        try:
            for k, bias in enumerate(biases[1:], start=1):
                with answered:  # let the clients see every round
                    seen = len(answers)
                    answered.wait_for(lambda seen=seen: len(answers) > seen, timeout=30)
                for subject in subjects:
                    published = rater.publish(subject, linear_weights(bias))
                    if subject == "alice":
                        versions[published.version] = k
        finally:
            done.set()

    def client(user: str) -> None:
        while not done.is_set():
            answer = rater.rate(user, photos["chelsea"], photos["coffee"])
            with answered:
                answers.append(answer)
                answered.notify_all()

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client, user) for user in ("all", "all", "alice")]
        pool.submit(publisher).result(timeout=120)
        for c in clients:
            c.result(timeout=120)  # raises if any request failed

    rounds_seen = set()
    for answer in answers:
        rounds = {}
        for entry in answer.users:
            values = {round(r, 5) for r in entry.ratings}
            assert len(values) == 1 and values <= round_of.keys(), (entry.user, values)
            rounds[entry.user] = round_of[values.pop()]
            if entry.user == "alice" and entry.model_version in versions:
                assert rounds["alice"] == versions[entry.model_version]
        if len(rounds) > 1:
            assert rounds["carol"] == rounds["1234567890"]
            assert rounds["carol"] >= rounds["alice"] >= rounds["bob"] >= rounds["carol"] - 1, rounds
        rounds_seen |= set(rounds.values())
    assert len(rounds_seen) >= len(biases) - 1  # the clients really rated across the swaps


def test_bad_input_names_the_file(rater, photos) -> None:
    rater.publish("all", linear_weights(0.0))
    good = (photos["coffee"], "ok.jpg")
    cases = [
        (
            [good, (b"just some text", "notes.txt")],
            grpc.StatusCode.INVALID_ARGUMENT,
            "unsupported_image",
            "file 2 ('notes.txt')",
        ),
        ([(b"", "empty.png")], grpc.StatusCode.INVALID_ARGUMENT, "empty_file", "file 1 ('empty.png')"),
        (
            [good, (truncated_jpeg(), "cut.jpg")],
            grpc.StatusCode.INVALID_ARGUMENT,
            "truncated_image",
            "file 2 ('cut.jpg')",
        ),
        ([(bomb_png(), "bomb.png")], grpc.StatusCode.INVALID_ARGUMENT, "too_many_pixels", "file 1 ('bomb.png')"),
        ([(make_image("PNG", (8, 8), 1), "")] * 5, grpc.StatusCode.INVALID_ARGUMENT, "too_many_files", "at most 4"),
        ([], grpc.StatusCode.INVALID_ARGUMENT, "missing_parameter", "no images"),
    ]
    for files, status, code, words in cases:
        images = [common_pb2.ImageFile(data=d, filename=n) for d, n in files]
        for call, request in [
            (rater.stub.Rate, rater_pb2.RateRequest(images=images, user="alice")),
            (rater.stub.Embed, rater_pb2.EmbedRequest(images=images)),
        ]:
            got_status, error = failure(call, request, DEADLINE)
            assert (got_status, error.code) == (status, code) and words in error.message, error.message

    for user, words in [("", "'user' parameter is required"), ("bad/name", "1-64 characters"), ("x" * 65, "1-64")]:
        got_status, error = failure(rater.rate, user, photos["coffee"])
        assert got_status == grpc.StatusCode.INVALID_ARGUMENT and words in error.message
    # "all" in any case means every user.
    assert [u.user for u in rater.rate("ALL", photos["coffee"]).users] == sorted(USERS)


def test_an_unreachable_dataset_service_is_unavailable(start_rater, photos) -> None:
    rater = start_rater(dataset_addr=f"127.0.0.1:{free_port()}", call_timeout_seconds=2.0)
    rater.publish("all", linear_weights(0.0))
    status, error = failure(rater.rate, "alice", photos["coffee"])
    assert status == grpc.StatusCode.UNAVAILABLE and "dataset" in error.message
    assert rater.embed(photos["coffee"]).shape == (1, DIMENSIONS)  # embedding needs no dataset service


def test_python_m_tagrate_rater_serves_the_heads_in_its_folder(start_rater, dataset_addr, photos, tmp_path) -> None:
    start_rater(tmp_path / "heads").publish("all", linear_weights(0.25))
    port = free_port()
    env = {
        "RATER_HOST": "127.0.0.1",
        "RATER_PORT": str(port),
        "RATER_METRICS_PORT": "0",
        "RATER_DEVICE": "cpu",
        "RATER_HEADS_DIR": str(tmp_path / "heads"),
        "RATER_DATASET_ADDR": dataset_addr,
        "RATER_TORCH_THREADS": "1",
        # The head was published for the in-process (torch) model's vectors,
        # which onnx-fp32 reproduces under the same extractor id (auto's
        # onnx-int8 is an extractor of its own).
        "RATER_BACKEND": "onnx-fp32",
    }
    process = ServiceProcess("tagrate_rater", env, tmp_path / "rater.log", f"127.0.0.1:{port}").start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            from tagrate_common.protos import rater_pb2_grpc

            stub = rater_pb2_grpc.RaterServiceStub(channel)
            request = rater_pb2.RateRequest(images=[common_pb2.ImageFile(data=photos["coffee"])], user="carol")
            [carol] = stub.Rate(request, timeout=DEADLINE).users
            assert carol.model == "global" and carol.ratings[0] == pytest.approx(float(sigmoid(0.25)), abs=1e-6)
        assert process.terminate() == 0
    finally:
        if process.proc and process.proc.poll() is None:
            process.kill()
