"""Shared fixtures for the tagger tests: the embedded model (loaded once per
session), real photographs as JPEG files, and a running tagger server."""

from __future__ import annotations

import io
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tagrate_common.protos import tagger_pb2_grpc
from tagrate_common.vision.loaders import load_default_model
from tagrate_common.vision.torch_models import EfficientNetLiteModel
from tagrate_tagger.config import TaggerSettings
from tagrate_tagger.server import create_server

# scikit-image's bundled sample photographs (no download needed) and a class
# the default model reliably ranks in its top 5 for each.
PHOTOS = {"chelsea": "tabby_cat", "coffee": "espresso", "rocket": "space_shuttle", "camera": "tripod"}


def jpeg(pixels: np.ndarray, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Sample photos as JPEG files, as a client would upload them."""
    return {name: jpeg(getattr(skimage.data, name)()) for name in PHOTOS}


@pytest.fixture(scope="session")
def default_model() -> EfficientNetLiteModel:
    return load_default_model("cpu")


def tagger_settings(**overrides) -> TaggerSettings:
    base = {"host": "127.0.0.1", "port": 0, "metrics_port": 0, "device": "cpu", "shutdown_grace_seconds": 1.0}
    return TaggerSettings(**{**base, **overrides})


@pytest.fixture(scope="session")
def tagger_target(default_model) -> Iterator[str]:
    """A tagger serving the default model in this process; its address."""
    server = create_server(tagger_settings(max_bulk_files=8, max_queue_delay_ms=10), model=default_model)
    port = server.start()
    yield f"127.0.0.1:{port}"
    server.stop(1.0)


@pytest.fixture(scope="session")
def tagger_stub(tagger_target) -> Iterator[tagger_pb2_grpc.TaggerServiceStub]:
    with grpc.insecure_channel(tagger_target) as channel:
        yield tagger_pb2_grpc.TaggerServiceStub(channel)
