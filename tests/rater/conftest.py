"""Shared fixtures for the rater tests: the embedded EfficientNet-Lite0
(loaded once per session), real photographs, a real dataset service that
knows the users (they are created by its AddRating RPC with real images),
and rater servers started in this process on free ports."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.objectstore import ObjectStore, S3Objects
from tagrate_common.protos import common_pb2, rater_pb2, rater_pb2_grpc, ratings_pb2
from tagrate_common.vision.loaders import load_default_model
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_common.vision.torch_models import EfficientNetLiteModel
from tagrate_dataset.server import create_server as create_dataset_server
from tagrate_rater.config import RaterSettings
from tagrate_rater.server import create_server
from tests.imagefactory import make_image
from tests.s3server import MotoServer
from tests.support import dataset_settings

DEADLINE = 60.0
DIMENSIONS = 1280
# The users the dataset service knows; "1234567890" is a chat platform id.
USERS = ("alice", "bob", "carol", "1234567890")
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(params=["fs", "s3"])
def heads_at(request: pytest.FixtureRequest, tmp_path: Path) -> Path | ObjectStore:
    """Where a heads store lives, once per backend: the test's folder (the
    store is its ``heads`` folder), or a fresh bucket on the moto server."""
    if request.param == "fs":
        return tmp_path
    moto: MotoServer = request.getfixturevalue("moto_server")
    return S3Objects(moto.client(), moto.new_bucket(), "tagrate/heads/")


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """scikit-image's sample photos as JPEG files, as a client uploads them."""
    return {name: jpeg(getattr(skimage.data, name)()) for name in PHOTOS}


@pytest.fixture(scope="session")
def default_model() -> EfficientNetLiteModel:
    return load_default_model("cpu")


@pytest.fixture(scope="session")
def dataset_addr(tmp_path_factory) -> Iterator[str]:
    """A real dataset service on SQLite that knows :data:`USERS`."""
    data_dir = tmp_path_factory.mktemp("dataset")
    settings = dataset_settings(data_dir, shutdown_grace_seconds=0.5)
    server = create_dataset_server(settings)
    addr = f"127.0.0.1:{server.start()}"
    with grpc.insecure_channel(addr) as channel:
        stub = DatasetStubs(channel)
        for seed, user in enumerate(USERS):
            stub.ratings.AddRating(
                ratings_pb2.AddRatingRequest(
                    image=common_pb2.ImageFile(data=make_image("PNG", seed=seed), filename="x.png"),
                    user=user,
                    rating=0.5,
                ),
                timeout=DEADLINE,
            )
    yield addr
    server.stop(0)


def rater_settings(heads_dir: Path, dataset_addr: str, **overrides: object) -> RaterSettings:
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "device": "cpu",
        "heads_dir": heads_dir,
        "dataset_addr": dataset_addr,
        "max_bulk_files": 4,
        "max_upload_bytes": 512 * 1024,
        "max_image_pixels": 4_000_000,
        "shutdown_grace_seconds": 1.0,
    }
    values.update(overrides)
    return RaterSettings(**values)


@dataclass
class Rater:
    """A running rater and a client for it."""

    server: GrpcServer
    target: str
    stub: rater_pb2_grpc.RaterServiceStub
    channel: grpc.Channel
    heads_dir: Path

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(1.0)

    def publish(self, user: str, weights: bytes, kind: str = "linear", **metadata: object) -> rater_pb2.HeadMetadata:
        extractor_id = metadata.pop("extractor_id", None) or self.extractor_id
        request = rater_pb2.PublishHeadRequest(
            metadata=rater_pb2.HeadMetadata(user=user, kind=kind, extractor_id=extractor_id, **metadata),
            weights=weights,
        )
        return self.stub.PublishHead(request, timeout=DEADLINE).metadata

    @property
    def extractor_id(self) -> str:
        return self.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=DEADLINE).extractor_id

    def rate(self, user: str, *files: bytes) -> rater_pb2.RateResponse:
        images = [common_pb2.ImageFile(data=data, filename=f"image{i}.jpg") for i, data in enumerate(files, 1)]
        return self.stub.Rate(rater_pb2.RateRequest(images=images, user=user), timeout=DEADLINE)

    def embed(self, *files: bytes) -> np.ndarray:
        images = [common_pb2.ImageFile(data=data, filename=f"image{i}.jpg") for i, data in enumerate(files, 1)]
        reply = self.stub.Embed(rater_pb2.EmbedRequest(images=images), timeout=DEADLINE)
        return np.array([list(v.values) for v in reply.vectors], dtype=np.float32)


@pytest.fixture
def start_rater(default_model, dataset_addr, tmp_path) -> Iterator[Callable[..., Rater]]:
    """Starts raters (default: on the session's model, with heads in this
    test's own folder) and stops them when the test ends."""
    started: list[Rater] = []

    def start(heads_dir: Path | None = None, **overrides: object) -> Rater:
        folder = heads_dir or tmp_path / "heads"
        overrides.setdefault("dataset_addr", dataset_addr)
        # A test naming a model directory gets that model; the others share the session's.
        model = None if overrides.get("model_dir") else default_model
        server = create_server(rater_settings(folder, **overrides), model=model)
        target = f"127.0.0.1:{server.start()}"
        channel = grpc.insecure_channel(target)
        rater = Rater(server, target, rater_pb2_grpc.RaterServiceStub(channel), channel, folder)
        started.append(rater)
        return rater

    yield start
    for rater in started:
        rater.stop()


@pytest.fixture
def rater(start_rater) -> Rater:
    return start_rater()


def linear_weights(bias: float, weight: np.ndarray | None = None, **extra: np.ndarray) -> bytes:
    """A linear head: a constant rating sigmoid(bias) unless ``weight`` is given."""
    return serialize_weights(
        {"weight": np.zeros(DIMENSIONS) if weight is None else weight, "bias": np.array(bias), **extra}
    )


def sigmoid(x: float | np.ndarray) -> float | np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))
