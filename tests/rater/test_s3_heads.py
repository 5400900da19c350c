"""Rater replicas with their heads in an S3 bucket (RATER_HEADS_BACKEND=s3,
moto in server mode) and no shared folder: a head published to one replica
is served by the other after its reload, a replica started later loads
every head from the bucket, a chosen older version serves everywhere, and
nothing is written to the local heads folder."""

from __future__ import annotations

import time

import grpc

from tagrate_common.protos import rater_pb2
from tests.s3server import MotoServer

from .conftest import DEADLINE, linear_weights, sigmoid

RELOAD_SECONDS = 0.2


def _served(rater, user: str, version: str, photo: bytes) -> rater_pb2.UserRatings:
    """``rater``'s answer for ``user`` once it serves head ``version`` (or
    after a generous wait, for the assertion to report)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = rater.rate(user, photo).users[0]
        except grpc.RpcError as exc:  # no head for the user yet
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
        else:
            if reply.model_version == version or time.monotonic() > deadline:
                return reply
        time.sleep(0.05)


def test_replicas_share_heads_through_the_bucket(start_rater, moto_server: MotoServer, photos, tmp_path) -> None:
    bucket = moto_server.new_bucket()
    s3 = {
        "heads_backend": "s3",
        "s3_bucket": bucket,
        "s3_endpoint_url": moto_server.url,
        "s3_prefix": "lib",
        "heads_reload_seconds": RELOAD_SECONDS,
    }
    a = start_rater(tmp_path / "a-heads", **s3)
    b = start_rater(tmp_path / "b-heads", **s3)
    first = a.publish("alice", linear_weights(0.4)).version
    a.publish("all", linear_weights(-0.4))
    on_b = _served(b, "alice", first, photos["coffee"])
    assert on_b.model_version == first
    assert abs(on_b.ratings[0] - float(sigmoid(0.4))) < 1e-5
    heads = set(moto_server.keys(bucket)) - {"lib/heads/GENERATION"}
    assert len(heads) == 2 and all(key.startswith("lib/heads/") and key.endswith(".head") for key in heads)

    second = b.publish("alice", linear_weights(0.9)).version
    assert _served(a, "alice", second, photos["coffee"]).model_version == second
    # An older version chosen on one replica serves on the other too.
    b.stub.UseHeadVersion(rater_pb2.UseHeadVersionRequest(user="alice", version=first), timeout=DEADLINE)
    assert _served(a, "alice", first, photos["coffee"]).model_version == first

    # A replica started now loads every head from the bucket, the pinned one for alice.
    c = start_rater(tmp_path / "c-heads", **s3)
    listed = {h.user: h.version for h in c.stub.ListHeads(rater_pb2.ListHeadsRequest(), timeout=DEADLINE).heads}
    assert listed["alice"] == first and set(listed) == {"alice", "all"}
    assert c.rate("bob", photos["coffee"]).users[0].model == "global"
    assert not any(path.exists() for path in (tmp_path / "a-heads", tmp_path / "b-heads", tmp_path / "c-heads"))
