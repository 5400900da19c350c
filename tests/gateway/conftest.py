"""The gateway served by a real uvicorn server on a free port, in a
background thread of the test process, talking real gRPC."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from tagrate_gateway.app import create_app
from tagrate_gateway.config import GatewaySettings
from tests.support import free_port

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
        config = uvicorn.Config(self.app, host="127.0.0.1", port=settings.port, log_config=None, lifespan="on")
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
