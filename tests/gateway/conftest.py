"""The gateway served by a real uvicorn server on a free port, in a
background thread of the test process, talking real gRPC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import uvicorn
from fastapi import FastAPI

from tagrate_gateway.app import create_app
from tagrate_gateway.config import GatewaySettings
from tests.support import free_port

if TYPE_CHECKING:
    from tagrate_common.grpc_server import GrpcServer
    from tagrate_common.vision.models import ImageModel

# Small enough that an oversized upload is cheap to send in a test.
TEST_UPLOAD_LIMIT = 256 * 1024


def gateway_settings(dataset_addr: str, data_dir: Path, **overrides: object) -> GatewaySettings:
    """Settings for a test gateway: only the dataset backend is configured."""
    values: dict[str, object] = {
        "port": free_port(),
        "dataset_addr": dataset_addr,
        "tagger_addr": "",
        "rater_addr": "",
        "trainer_addr": "",
        "data_dir": data_dir,
        "max_upload_bytes": TEST_UPLOAD_LIMIT,
        "max_bulk_files": 4,
        "health_timeout_seconds": 1.0,
    }
    values.update(overrides)
    return GatewaySettings(**values)


class GatewayServer:
    """uvicorn serving :func:`create_app` in a thread (signals stay with pytest)."""

    def __init__(self, settings: GatewaySettings, app: FastAPI | None = None) -> None:
        self.settings = settings
        self.app = app or create_app(settings)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on", proxy_headers=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="test-gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def start(self, timeout: float = 15.0) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test gateway did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)


@pytest.fixture
def start_gateway() -> Iterator[Callable[..., GatewayServer]]:
    """Starts gateways (optionally a given app) for one test and stops them afterwards."""
    started: list[GatewayServer] = []

    def start(settings: GatewaySettings, app: FastAPI | None = None) -> GatewayServer:
        server = GatewayServer(settings, app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="package")
def shared(tmp_path_factory):
    """One seeded SQLite-backed dataset service + gateway for the tests that
    leave the data as they found it (see :func:`tests.gateway.stack.seed`)."""
    from .stack import seed, start_stack  # needs the dataset service; imported only when used

    stack = start_stack(f"sqlite:///{tmp_path_factory.mktemp('db') / 'tagrate.db'}", tmp_path_factory.mktemp("data"))
    try:
        yield seed(stack)
    finally:
        stack.stop()


# The tagger behind the /tag and /tagbulk tests. Its model (torch) is loaded
# only by the tests that use it, once per session.
TAGGER_UPLOAD_LIMIT = 1024 * 1024  # real photographs as PNG are a few hundred KiB
TAGGER_BULK_FILES = 4


def start_tagger(model: ImageModel, **overrides: object) -> tuple[GrpcServer, str]:
    """A real tagger serving ``model`` in this process on a free port, with
    the same upload limits as the tagger gateway; returns it and its address."""
    from tagrate_tagger.config import TaggerSettings
    from tagrate_tagger.server import create_server

    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "metrics_port": 0,
        "device": "cpu",
        "shutdown_grace_seconds": 1.0,
        "max_upload_bytes": TAGGER_UPLOAD_LIMIT,
        "max_bulk_files": TAGGER_BULK_FILES,
    }
    values.update(overrides)
    server = create_server(TaggerSettings(**values), model=model)
    return server, f"127.0.0.1:{server.start()}"


def tagger_gateway_settings(tagger_addr: str, data_dir: Path) -> GatewaySettings:
    """A test gateway whose only backend is the tagger at ``tagger_addr``."""
    return gateway_settings(
        "",
        data_dir,
        tagger_addr=tagger_addr,
        max_upload_bytes=TAGGER_UPLOAD_LIMIT,
        max_bulk_files=TAGGER_BULK_FILES,
    )


@pytest.fixture(scope="session")
def tagger_model() -> ImageModel:
    """The embedded default model (EfficientNet-Lite0, ImageNet), on the CPU."""
    from tagrate_common.vision.loaders import load_default_model

    return load_default_model("cpu")


@pytest.fixture(scope="session")
def tagger(tagger_model: ImageModel) -> Iterator[str]:
    """A real tagger serving the default model; its address."""
    server, addr = start_tagger(tagger_model)
    yield addr
    server.stop(1.0)


@pytest.fixture(scope="session")
def tag_gateway(tagger: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """A real gateway in front of :func:`tagger` (no other backend)."""
    server = GatewayServer(tagger_gateway_settings(tagger, tmp_path_factory.mktemp("tag-gateway"))).start()
    yield server
    server.stop()
