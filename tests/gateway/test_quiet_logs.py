"""The gateway's log volume and the failed-work endpoints, against the real
gateway process (``python -m tagrate_gateway``, its production logging set
up) in front of a real dataset service and a real trainer: a request writes
at most one INFO line (uvicorn's own access log is off), polls of
/trainerstatus, /healthz, /readyz and /metrics write none at INFO, and
/verifydatasets and /retryfailed report and retry background work parked as
failed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from tagrate_dataset.db import create_db_engine
from tagrate_dataset.server import create_server as create_dataset_server
from tagrate_trainer.config import TrainerSettings
from tagrate_trainer.server import create_server as create_trainer_server
from tests.imagefactory import make_image
from tests.support import dataset_settings, free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    http: httpx.Client
    log: Path
    database_url: str

    def lines(self, request_id: str) -> list[str]:
        """The gateway's log lines for one request, by its request id."""
        return [line for line in self.log.read_text().splitlines() if f"[{request_id}]" in line]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp("quiet")
    database_url = f"sqlite:///{data_dir / 'tagrate.db'}"
    dataset = create_dataset_server(dataset_settings(data_dir, database_url, background_work=False))
    dataset_addr = f"127.0.0.1:{dataset.start()}"
    trainer = create_trainer_server(
        TrainerSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            data_dir=data_dir / "trainer",
            dataset_addr=dataset_addr,
            rater_addr="",
            shutdown_grace_seconds=0.5,
        )
    )
    trainer_addr = f"127.0.0.1:{trainer.start()}"
    port = free_port()
    env = {
        **os.environ,
        "TAGRATE_DATA_DIR": str(data_dir),
        "TAGRATE_LOG_LEVEL": "INFO",
        "TAGRATE_LOG_FORMAT": "text",
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATASET_ADDR": dataset_addr,
        "GATEWAY_TRAINER_ADDR": trainer_addr,
        "GATEWAY_TAGGER_ADDR": "",
        "GATEWAY_RATER_ADDR": "",
    }
    log = data_dir / "gateway.log"
    with log.open("wb") as out:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                http.get("/healthz", headers={"X-Request-ID": "startup"})
                break
            except httpx.TransportError:
                assert gateway.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        yield Running(http, log, database_url)
    finally:
        http.close()
        gateway.terminate()
        gateway.wait(15)
        trainer.stop(0)
        dataset.stop(0)


def call(running: Running, method: str, path: str, **kwargs: object) -> tuple[httpx.Response, list[str]]:
    """Makes one request with its own request id; returns the response and
    the gateway's log lines for it (once they stopped coming)."""
    request_id = uuid.uuid4().hex[:16]
    response = running.http.request(method, path, headers={"X-Request-ID": request_id}, **kwargs)  # type: ignore[arg-type]
    time.sleep(0.3)  # the access line is written after the response is sent
    return response, running.lines(request_id)


def test_polls_are_quiet_and_other_requests_write_one_line(running: Running) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/trainerstatus"):
        response, lines = call(running, "GET", path)
        assert response.status_code == 200, response.text
        assert lines == [], path
    image = make_image("PNG", (32, 24), seed=1)
    requests = [
        ("POST", "/addrating", {"files": {"image": ("a.png", image)}, "data": {"user": "alice", "rating": "0.5"}}),
        ("GET", "/getuserdata", {"params": {"user": "alice"}}),
        ("GET", "/verifydatasets", {}),
        ("GET", "/getuserdata", {"params": {"user": "nobody"}}),  # a 404 is logged too
    ]
    for method, path, kwargs in requests:
        response, lines = call(running, method, path, **kwargs)
        assert response.status_code in (200, 404), response.text
        assert len(lines) == 1, (path, lines)
        assert " INFO " in lines[0] and f"{path} {response.status_code}" in lines[0]


def test_failed_work_is_listed_and_retried(running: Running) -> None:
    image = make_image("PNG", (32, 24), seed=2)
    added = running.http.post("/addrating", files={"image": ("b.png", image)}, data={"user": "bob", "rating": "1"})
    assert added.status_code == 200, added.text
    name = added.json()["image"]
    engine = create_db_engine(running.database_url, pool_size=1, max_overflow=0)
    try:
        with engine.begin() as conn:  # as the worker leaves an image that kept killing the tagger
            conn.execute(
                text(
                    "UPDATE work_items SET state = 'failed', attempts = 3, error = 'the tagger died', "
                    "failed_by = 'm@1' WHERE kind = 'tag' AND image_id = (SELECT id FROM images WHERE name = :name)"
                ),
                {"name": name},
            )
    finally:
        engine.dispose()
    body = running.http.get("/verifydatasets").json()
    assert body["work"]["tag"]["failed"] == 1 and body["work"]["embed"]["failed"] == 0
    assert body["failed_work"] == [{"image": name, "kind": "tag", "error": "the tagger died", "attempts": 3}]

    bad = running.http.post("/retryfailed", data={"kind": "resize"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_kind"
    assert running.http.post("/retryfailed", data={"kind": "embed"}).json() == {"retried": 0}
    assert running.http.post("/retryfailed").json() == {"retried": 1}
    body = running.http.get("/verifydatasets").json()
    assert body["work"]["tag"]["failed"] == 0 and body["failed_work"] == []
