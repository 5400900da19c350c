"""The RPC helpers the dataset service's tests share: storing a rating, tags
and a trained snapshot, reading a user's summary, and checking that a
refused call stored nothing."""

from __future__ import annotations

import hashlib

import grpc

from tagrate_common.protos import ratings_pb2, tags_pb2, training_data_pb2, users_pb2, work_pb2
from tests.dataset.conftest import Served, image_file, rpc_error

NOT_FOUND, INVALID = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT


def add(served: Served, user: str, data: bytes, rating: float, filename: str = "photo.jpg"):
    request = ratings_pb2.AddRatingRequest(user=user, rating=rating, image=image_file(data, filename))
    return served.stub.ratings.AddRating(request, timeout=30)


def name_of(data: bytes, ext: str = "jpg") -> str:
    return f"{hashlib.sha256(data).hexdigest()}.{ext}"


def put_tags(served: Served, image: str, model: str, threshold: float, tags: list[tuple[str, float]]) -> None:
    request = tags_pb2.PutImageTagsRequest(
        image=image,
        model_id=model,
        threshold=threshold,
        tags=[tags_pb2.ImageTagScore(name=n, score=s) for n, s in tags],
    )
    served.stub.tags.PutImageTags(request, timeout=30)


def user_info(served: Served, user: str) -> users_pb2.UserInfo:
    return served.stub.users.GetUser(users_pb2.GetUserRequest(user=user), timeout=30)


def assert_refused(served: Served, call, request, status: grpc.StatusCode, code: str) -> str:
    """The call fails with ``status`` and tagrate ``code``, storing nothing."""
    before = served.state()
    got_status, got_code, message = rpc_error(call, request)
    assert (got_status, got_code) == (status, code), message
    assert served.state() == before
    return message


def update(served: Served, user: str, image: str, rating: float) -> ratings_pb2.UpdateRatingResponse:
    return served.stub.ratings.UpdateRating(
        ratings_pb2.UpdateRatingRequest(user=user, image=image, rating=rating), timeout=30
    )


def files(served: Served) -> list[str]:
    return [f for f in served.state()["files"] if isinstance(f, str)]  # type: ignore[union-attr]


def record_trained(served: Served, user: str) -> None:
    snap = user_info(served, user).snapshot_id
    served.stub.training.RecordTrainedSnapshot(
        training_data_pb2.RecordTrainedSnapshotRequest(
            user=user, snapshot_id=snap, model_version="v1", metrics={"mae": 0.1}
        ),
        timeout=30,
    )


def up_to_date(served: Served, user: str) -> bool:
    users = served.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest(), timeout=30).users
    return {u.user: u.model_up_to_date for u in users}[user]
