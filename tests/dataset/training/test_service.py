"""TrainingDataService over real gRPC, on SQLite and PostgreSQL:
StreamTrainingData (chunks, features, one snapshot) and RecordTrainedSnapshot
(with what VerifyDatasets then reports), and their refusals."""

from __future__ import annotations

import grpc

from tagrate_common.protos import common_pb2, images_pb2, training_data_pb2, work_pb2
from tests.dataset.calls import INVALID, add, assert_refused, user_info
from tests.dataset.conftest import Served, rpc_error
from tests.imagefactory import make_image


def _stream(
    served: Served, user: str, extractor: str = "", chunk_size: int = 0
) -> list[training_data_pb2.TrainingDataChunk]:
    request = training_data_pb2.StreamTrainingDataRequest(user=user, extractor_id=extractor, chunk_size=chunk_size)
    return list(served.stub.training.StreamTrainingData(request, timeout=30))


def test_stream_training_data_chunks_with_features_and_snapshot(served: Served) -> None:
    names = [add(served, "alice", make_image(seed=60 + i), i / 10).image for i in range(5)]
    add(served, "bob", make_image(seed=60), 0.9)
    vector = common_pb2.FeatureVector(values=[0.5, -1.25, 3.0])
    served.stub.images.PutImageFeatures(
        images_pb2.PutImageFeaturesRequest(image=names[1], extractor_id="effnet", vector=vector), timeout=30
    )
    chunks = _stream(served, "alice", "effnet", chunk_size=2)
    assert [len(c.examples) for c in chunks] == [2, 2, 1]
    assert chunks[0].snapshot_id == user_info(served, "alice").snapshot_id and chunks[0].total == 5
    examples = [e for c in chunks for e in c.examples]
    assert sorted((e.image, e.user, e.rating) for e in examples) == sorted(
        (n, "alice", i / 10) for i, n in enumerate(names)
    )
    with_features = {e.image: list(e.features.values) for e in examples if e.HasField("features")}
    assert with_features == {names[1]: [0.5, -1.25, 3.0]}
    assert not any(e.HasField("features") for c in _stream(served, "alice", "other") for e in c.examples)
    everyone = _stream(served, "all")
    assert everyone[0].snapshot_id == user_info(served, "all").snapshot_id
    assert sum(len(c.examples) for c in everyone) == everyone[0].total == 6
    call = served.stub.training.StreamTrainingData
    assert rpc_error(call, training_data_pb2.StreamTrainingDataRequest(user="nobody"))[:2] == (
        grpc.StatusCode.NOT_FOUND,
        "user_not_found",
    )
    too_big = training_data_pb2.StreamTrainingDataRequest(user="alice", chunk_size=1_000_000)
    assert rpc_error(call, too_big)[:2] == (INVALID, "invalid_chunk_size")


def test_a_rating_that_lands_mid_stream_does_not_change_the_streamed_snapshot(served: Served) -> None:
    for i in range(6):
        add(served, "alice", make_image(seed=70 + i), 0.5)
    request = training_data_pb2.StreamTrainingDataRequest(user="alice", chunk_size=1)
    stream = served.stub.training.StreamTrainingData(request, timeout=30)
    first = next(stream)
    add(served, "alice", make_image(seed=99), 0.7)  # lands while the stream is open
    add(served, "alice", make_image(seed=70), 0.9)  # and a change
    rest = list(stream)
    examples = [e for c in [first, *rest] for e in c.examples]
    assert first.total == 6 and len(examples) == 6
    assert all(e.rating == 0.5 for e in examples)
    assert first.snapshot_id != user_info(served, "alice").snapshot_id


def test_record_trained_snapshot_and_verify_datasets(served: Served) -> None:
    add(served, "bob", make_image(seed=80), 0.5)
    add(served, "alice", make_image(seed=81), 0.5)
    add(served, "alice", make_image(seed=82), 0.6)
    verify = lambda: served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=30)  # noqa: E731
    state = verify()
    assert not state.valid and state.untagged_images == 3
    assert [(u.user, u.ratings, u.model_up_to_date) for u in state.users] == [("alice", 2, False), ("bob", 1, False)]
    assert not state.users[0].HasField("trained_on_ratings") and not state.users[0].HasField("trained_at")
    assert state.users[0].last_rating_at.seconds > 0
    record = served.stub.training.RecordTrainedSnapshot
    for user in ("alice", "bob"):
        snapshot = _stream(served, user)[0].snapshot_id
        record(
            training_data_pb2.RecordTrainedSnapshotRequest(user=user, snapshot_id=snapshot, model_version="v1"),
            timeout=30,
        )
    state = verify()
    assert state.valid
    assert [(u.user, u.trained_on_ratings, u.model_up_to_date) for u in state.users] == [
        ("alice", 2, True),
        ("bob", 1, True),
    ]
    assert user_info(served, "alice").trained_snapshot_id == user_info(served, "alice").snapshot_id
    old = user_info(served, "alice").snapshot_id
    add(served, "alice", make_image(seed=83), 0.7)  # newer ratings: alice's model is stale
    state = verify()
    assert not state.valid and [u.model_up_to_date for u in state.users] == [False, True]
    assert state.users[0].trained_on_ratings == 2 and state.users[0].ratings == 3
    # recording an older snapshot keeps that snapshot's count
    record(
        training_data_pb2.RecordTrainedSnapshotRequest(user="alice", snapshot_id=old, model_version="v2"), timeout=30
    )
    assert verify().users[0].trained_on_ratings == 2
    everyone = user_info(served, "all").snapshot_id
    record(
        training_data_pb2.RecordTrainedSnapshotRequest(user="all", snapshot_id=everyone, model_version="g1"), timeout=30
    )
    assert user_info(served, "all").trained_snapshot_id == everyone


def test_record_trained_snapshot_refusals(served: Served) -> None:
    add(served, "alice", make_image(seed=90), 0.5)
    add(served, "bob", make_image(seed=91), 0.5)
    alice, bob = user_info(served, "alice").snapshot_id, user_info(served, "bob").snapshot_id
    call = served.stub.training.RecordTrainedSnapshot

    def refused(user: str, snapshot: str, code: str, status: grpc.StatusCode = INVALID) -> None:
        request = training_data_pb2.RecordTrainedSnapshotRequest(user=user, snapshot_id=snapshot, model_version="v")
        assert_refused(served, call, request, status, code)

    for bad in ("abc", "1:2", "1:2:3:4", "-1:1:1", "x:1:1", bob, "all:1:1", "1:1:1'; --", alice + "0"):
        refused("alice", bad, "invalid_snapshot_id")
    user_id, version, count = alice.split(":")
    refused("alice", f"{user_id}:{int(version) + 1}:{count}", "invalid_snapshot_id")  # from the future
    refused("all", alice, "invalid_snapshot_id")
    refused("alice", "", "missing_parameter")
    refused("nobody", alice, "user_not_found", grpc.StatusCode.NOT_FOUND)
    refused("bad user", alice, "invalid_user")
    long_version = training_data_pb2.RecordTrainedSnapshotRequest(
        user="alice", snapshot_id=alice, model_version="v" * 201
    )
    assert_refused(served, call, long_version, INVALID, "invalid_parameter")
