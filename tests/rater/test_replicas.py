"""Rater replicas sharing one heads folder, as Kubernetes runs them on a
shared volume: two real ``python -m tagrate_rater`` processes; a head
published to one is served by the other within seconds, and a damaged file
in the folder does not take the other down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from tagrate_common.protos import common_pb2, rater_pb2, rater_pb2_grpc
from tests.support import ServiceProcess, free_port

from .conftest import DEADLINE, DIMENSIONS, linear_weights

# The setting's default: what a deployment gets without configuring anything.
RELOAD_SECONDS = 2.0


class Replica:
    def __init__(self, process: ServiceProcess) -> None:
        self.process = process
        self.channel = grpc.insecure_channel(process.target)
        self.stub = rater_pb2_grpc.RaterServiceStub(self.channel)

    def rate(self, user: str, photo: bytes) -> rater_pb2.UserRatings:
        request = rater_pb2.RateRequest(images=[common_pb2.ImageFile(data=photo, filename="p.jpg")], user=user)
        [reply] = self.stub.Rate(request, timeout=DEADLINE).users
        return reply

    def publish(self, user: str, weights: bytes) -> str:
        extractor = self.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE).extractor_id
        request = rater_pb2.PublishHeadRequest(
            metadata=rater_pb2.HeadMetadata(user=user, kind="linear", extractor_id=extractor), weights=weights
        )
        return self.stub.PublishHead(request, timeout=DEADLINE).metadata.version


@pytest.fixture
def replicas(dataset_addr, tmp_path) -> Iterator[tuple[Replica, Replica, Path]]:
    heads = tmp_path / "heads"
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            port = free_port()
            env = {
                "RATER_HOST": "127.0.0.1",
                "RATER_PORT": str(port),
                "RATER_METRICS_PORT": "0",
                "RATER_DEVICE": "cpu",
                "RATER_HEADS_DIR": str(heads),
                "RATER_HEADS_RELOAD_SECONDS": str(RELOAD_SECONDS),
                "RATER_DATASET_ADDR": dataset_addr,
                "RATER_TORCH_THREADS": "1",
            }
            process = ServiceProcess("tagrate_rater", env, tmp_path / f"rater-{name}.log", f"127.0.0.1:{port}")
            started.append(Replica(process.start(120)))
        yield started[0], started[1], heads
    finally:
        for replica in started:
            replica.channel.close()
            if replica.process.proc and replica.process.proc.poll() is None:
                replica.process.kill()


def served_within(replica: Replica, user: str, version: str, photo: bytes) -> rater_pb2.UserRatings:
    """``replica``'s answer for ``user`` once it serves head ``version``."""
    deadline = time.monotonic() + RELOAD_SECONDS + 5
    while True:
        try:
            reply = replica.rate(user, photo)
        except grpc.RpcError as exc:  # no head for the user yet
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                raise
        else:
            if reply.model_version == version or time.monotonic() > deadline:
                return reply
        time.sleep(0.1)


@pytest.mark.slow
def test_a_head_published_to_one_replica_is_served_by_the_other(replicas, photos) -> None:
    a, b, heads = replicas
    weight = np.random.default_rng(5).normal(scale=0.05, size=DIMENSIONS)
    version = a.publish("alice", linear_weights(0.1, weight))
    begun = time.monotonic()
    on_a, on_b = a.rate("alice", photos["coffee"]), served_within(b, "alice", version, photos["coffee"])
    assert on_b.model_version == version, "replica b still serves its old heads"
    assert time.monotonic() - begun < RELOAD_SECONDS + 3
    assert (on_b.model, on_b.ratings[0]) == (on_a.model, pytest.approx(on_a.ratings[0], abs=1e-6))

    # A torn file and a garbage file under head names, and a generation bump
    # that makes b read them: b keeps serving alice's head, and still picks
    # up the next one published to a.
    folder = next(p for p in heads.iterdir() if p.is_dir())
    [good] = folder.glob("*.head")
    (folder / "00000002-torn.head").write_bytes(good.read_bytes()[:300])
    (folder / "00000003-junk.head").write_bytes(b"\x00" * 64)
    (heads / "GENERATION").write_text("written by hand\n")
    time.sleep(RELOAD_SECONDS + 0.5)
    assert b.process.proc.poll() is None
    assert b.rate("alice", photos["coffee"]).model_version == version
    newer = a.publish("alice", linear_weights(-0.4, -weight))
    assert newer.startswith("v4-")
    on_a, on_b = a.rate("alice", photos["chelsea"]), served_within(b, "alice", newer, photos["chelsea"])
    assert on_b.model_version == newer
    assert on_b.ratings[0] == pytest.approx(on_a.ratings[0], abs=1e-6)
    assert "skipping head file" in b.process.log()
    assert a.process.terminate() == 0 and b.process.terminate() == 0
