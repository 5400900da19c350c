"""Fixtures for the dataset service tests: settings on a fresh database
(SQLite and PostgreSQL), a real server on a free port, and a view of
everything the service has stored (to prove a refused call changed nothing)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import Engine, text

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.errors import ERROR_CODE_KEY
from tagrate_common.protos import common_pb2
from tagrate_dataset.bulk import TABLES
from tagrate_dataset.config import DatasetSettings
from tagrate_dataset.db import create_db_engine, migrate
from tagrate_dataset.server import create_server
from tests.support import ServiceProcess, dataset_settings

MAX_UPLOAD = 200_000  # small, so "too large" files are cheap to make


def make_settings(tmp_path: Path, database_url: str, **overrides) -> DatasetSettings:
    values = dict(max_upload_bytes=MAX_UPLOAD, max_image_pixels=4_000_000, shutdown_grace_seconds=1.0)
    return dataset_settings(tmp_path / "data", database_url, **{**values, **overrides})


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> DatasetSettings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated database (the same one ``settings`` points at)."""
    engine = create_db_engine(database_url, pool_size=2, max_overflow=2)
    migrate(engine)
    yield engine
    engine.dispose()


@dataclass
class Served:
    settings: DatasetSettings
    stub: DatasetStubs
    target: str
    engine: Engine

    def state(self) -> dict[str, object]:
        """Every table's row count plus every file in the blob and cache
        folders: equal before and after a refused call."""
        return stored_state(self.engine, self.settings)


def stored_state(engine: Engine, settings: DatasetSettings) -> dict[str, object]:
    with engine.connect() as conn:
        counts: dict[str, object] = {
            table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in TABLES
        }
        counts["users.ratings_version"] = conn.execute(
            text("SELECT coalesce(sum(ratings_version), 0) FROM users")
        ).scalar_one()
    counts["files"] = stored_files(settings)
    return counts


def stored_files(settings: DatasetSettings) -> list[str]:
    """Every object in the blob and cache stores (folders or a bucket), as
    ``dataset/blobs/<key>`` and ``dataset/cache/<key>``."""
    originals, cache = settings.blob_stores()
    return sorted(
        f"dataset/{label}/{item.key}"
        for label, objects in (("blobs", originals), ("cache", cache))
        for item in objects.list()
    )


@pytest.fixture
def served(settings: DatasetSettings) -> Iterator[Served]:
    """The dataset service running in this process on a free port."""
    server = create_server(settings)
    port = server.start()
    target = f"127.0.0.1:{port}"
    channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
    engine = create_db_engine(settings.database_url, pool_size=1, max_overflow=1)
    try:
        yield Served(settings, DatasetStubs(channel), target, engine)
    finally:
        engine.dispose()
        channel.close()
        server.stop(0)


def dataset_process(tmp_path: Path, database_url: str, port: int, **env: str) -> ServiceProcess:
    """The dataset service as its own process on ``port`` (for tests that
    SIGKILL it), its data under ``tmp_path``; ``env`` adds settings."""
    settings = {
        "DATASET_HOST": "127.0.0.1",
        "DATASET_PORT": str(port),
        "DATASET_METRICS_PORT": "0",
        "DATABASE_URL": database_url,
        "TAGRATE_DATA_DIR": str(tmp_path / "data"),
        "TAGRATE_LOG_LEVEL": "WARNING",
        **env,
    }
    return ServiceProcess("tagrate_dataset", settings, tmp_path / "dataset.log", f"127.0.0.1:{port}")


def image_file(data: bytes, filename: str = "photo.jpg") -> common_pb2.ImageFile:
    return common_pb2.ImageFile(data=data, filename=filename)


def rpc_error(call, request) -> tuple[grpc.StatusCode, str, str]:
    """Makes a call that must fail; returns (status, tagrate error code, message)."""
    with pytest.raises(grpc.RpcError) as info:
        result = call(request, timeout=30)
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            list(result)  # a stream fails while it is read
    exc = info.value
    trailing = dict(exc.trailing_metadata() or ())
    return exc.code(), trailing.get(ERROR_CODE_KEY, ""), exc.details()


# ---- the model services the dataset service calls ----


@pytest.fixture(scope="session")
def vision_model():
    """The embedded default model (EfficientNet-Lite0, ImageNet) on the CPU,
    loaded once: the tagger and the rater in these tests both serve it."""
    from tagrate_common.vision.loaders import load_default_model

    return load_default_model("cpu")


@pytest.fixture(scope="session")
def tagger_addr(vision_model) -> Iterator[str]:
    """A real tagger serving the default model for the whole session."""
    from .peers import start_tagger

    server, addr = start_tagger(vision_model)
    yield addr
    server.stop(0)


@pytest.fixture(scope="session")
def rater_addr(vision_model, tmp_path_factory) -> Iterator[str]:
    """A real rater whose feature extractor is the default model."""
    from .peers import start_rater

    server, addr = start_rater(vision_model, tmp_path_factory.mktemp("heads"))
    yield addr
    server.stop(0)
