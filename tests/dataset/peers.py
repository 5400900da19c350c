"""Real model services for the dataset service's tests: the tagger and the
rater serving the embedded default model, in this process on free ports,
plus the dataset service itself with them configured."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc
from prometheus_client import REGISTRY

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import ratings_pb2, tags_pb2
from tagrate_common.vision.models import ImageModel
from tagrate_dataset.server import DatasetServer, create_server
from tests.imagefactory import make_image

from .conftest import MAX_UPLOAD, Served, image_file, make_settings

T = TypeVar("T")

# Small batches keep the CPU warm-up short; the dataset service's default
# batch (16) is split by the tagger's own batcher anyway.
MODEL_BATCH = 4
DEADLINE = 30.0


def start_tagger(model: ImageModel, port: int = 0, **overrides: object) -> tuple[GrpcServer, str]:
    """A real tagger on ``port`` (0: a free one); returns it and its address."""
    from tagrate_tagger.config import TaggerSettings
    from tagrate_tagger.server import create_server as create_tagger

    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": port,
        "metrics_port": 0,
        "device": "cpu",
        "max_batch_size": MODEL_BATCH,
        "max_upload_bytes": MAX_UPLOAD,
        "shutdown_grace_seconds": 0.5,
    }
    values.update(overrides)
    server = create_tagger(TaggerSettings(**values), model=model)
    return server, f"127.0.0.1:{server.start()}"


def start_rater(model: ImageModel, heads_dir: Path, port: int = 0) -> tuple[GrpcServer, str]:
    """A real rater (no user directory: only Embed and GetExtractorInfo are used)."""
    from tagrate_rater.config import RaterSettings
    from tagrate_rater.server import create_server as create_rater

    settings = RaterSettings(
        host="127.0.0.1",
        port=port,
        metrics_port=0,
        device="cpu",
        heads_dir=heads_dir,
        dataset_addr="",
        max_batch_size=MODEL_BATCH,
        max_upload_bytes=MAX_UPLOAD,
        shutdown_grace_seconds=0.5,
    )
    server = create_rater(settings, model=model)
    return server, f"127.0.0.1:{server.start()}"


@contextmanager
def dataset_service(tmp_path: Path, database_url: str, **overrides: object) -> Iterator[tuple[Served, DatasetServer]]:
    """The dataset service with fast background retries; peers and the
    worker as ``overrides`` say (by default neither peer is configured)."""
    from sqlalchemy import Engine

    from tagrate_dataset.db import create_db_engine

    values: dict[str, object] = {
        "work_poll_seconds": 0.2,
        "work_backoff_initial_seconds": 0.05,
        "work_backoff_max_seconds": 0.4,
    }
    values.update(overrides)
    settings = make_settings(tmp_path, database_url, **values)
    server = create_server(settings)
    target = f"127.0.0.1:{server.start()}"
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    engine: Engine = create_db_engine(settings.database_url, pool_size=1, max_overflow=1)
    try:
        yield Served(settings, DatasetStubs(channel), target, engine), server
    finally:
        engine.dispose()
        channel.close()
        server.stop(0)


def add_rating(served: Served, user: str, data: bytes, rating: float = 0.5) -> str:
    """Stores a rating (and the image); returns the image's stored name."""
    reply = served.stub.ratings.AddRating(
        ratings_pb2.AddRatingRequest(image=image_file(data, "photo.png"), user=user, rating=rating), timeout=DEADLINE
    )
    return reply.image


def images(count: int, start: int = 0, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    """``count`` distinct small PNG files."""
    return [make_image("PNG", size, seed=seed) for seed in range(start, start + count)]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    """Polls ``probe`` until it returns something truthy (bounded: the test
    fails with ``what`` after ``timeout`` seconds, it never hangs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f}s")
        time.sleep(0.05)


def tagged(served: Served, image: str) -> tags_pb2.GetImageTagsResponse | None:
    reply = served.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=image), timeout=DEADLINE)
    return reply if reply.tagged else None


def rpc_count(service: str, method: str, code: str = "OK") -> float:
    """How many ``method`` calls ``service`` has answered with ``code`` in
    this process (the servers' own Prometheus counter)."""
    labels = {"service": service, "method": method, "code": code}
    return REGISTRY.get_sample_value("tagrate_grpc_server_handled_total", labels) or 0.0
