"""What tests/gateway/test_predictions_e2e.py uses beside its tests: the
stack of processes (:class:`Stack`; the fixture that starts it stays with
the tests), their environments, and the HTTP and SQL helpers."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import numpy as np

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import library_pb2, rater_pb2_grpc
from tests.support import ServiceProcess

from .conftest import GatewayServer
from .stack import add_rating

T = TypeVar("T")
DEADLINE = 60.0
TOLERANCE = 1e-5
# Taste scenes: the ones the users rate, and the ones nobody but "pool" rated.
RATED, UNRATED = 40, 24
EVERY_VECTOR = "SELECT (SELECT count(*) FROM images) = (SELECT count(*) FROM image_features)"


@dataclass
class Stack:
    data_dir: Path
    db: Path
    dataset: ServiceProcess
    rater: ServiceProcess
    trainer: GrpcServer
    gateway: GatewayServer
    http: httpx.Client
    channels: list[grpc.Channel]

    @property
    def dataset_stub(self) -> DatasetStubs:
        return DatasetStubs(self.channels[0])

    @property
    def rater_stub(self) -> rater_pb2_grpc.RaterServiceStub:
        return rater_pb2_grpc.RaterServiceStub(self.channels[1])

    def sql(self, query: str, *args: object) -> list[tuple]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(query, args).fetchall()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _dataset_env(port: int, db: Path, rater_addr: str, data_dir: Path, chunk: int) -> dict[str, str]:
    return {
        "TAGRATE_DATA_DIR": str(data_dir),
        "DATASET_HOST": "127.0.0.1",
        "DATASET_PORT": str(port),
        "DATASET_METRICS_PORT": "0",
        "DATASET_DATABASE_URL": f"sqlite:///{db}",
        "DATASET_TAGGER_ADDR": "",
        "DATASET_RATER_ADDR": rater_addr,
        "DATASET_WORK_POLL_SECONDS": "0.2",
        "DATASET_WORK_BACKOFF_INITIAL_SECONDS": "0.2",
        "DATASET_WORK_BACKOFF_MAX_SECONDS": "0.5",
        "DATASET_SCORE_CHUNK_IMAGES": str(chunk),
        "DATASET_SHUTDOWN_GRACE_SECONDS": "1",
    }


def _rater_env(port: int, dataset_addr: str, data_dir: Path) -> dict[str, str]:
    return {
        "TAGRATE_DATA_DIR": str(data_dir),
        "RATER_HOST": "127.0.0.1",
        "RATER_PORT": str(port),
        "RATER_METRICS_PORT": "0",
        "RATER_DEVICE": "cpu",
        "RATER_HEADS_DIR": str(data_dir / "heads"),
        "RATER_DATASET_ADDR": dataset_addr,
        "RATER_SHUTDOWN_GRACE_SECONDS": "1",
    }


# ---- helpers -------------------------------------------------------------------


def rate_all(http: httpx.Client, user: str, items: list[tuple[bytes, float]]) -> list[str]:
    names = []
    for png, rating in items:
        response = add_rating(http, png, user, str(rating), "scene.png")
        assert response.status_code == 200, response.text
        names.append(response.json()["image"])
    return names


def train(http: httpx.Client, user: str) -> None:
    def started() -> httpx.Response | None:
        response = http.get("/trainuser", params={"user": user, "force": "true"})
        # 503 while the trainer reconnects to a dataset service just restarted
        return None if response.status_code == 503 else response

    response = wait_for("the trainer", started, timeout=30)
    assert response.status_code == 202, response.text

    def finished() -> dict | None:
        status = http.get("/trainerstatus").json()["status"]
        return None if status["is_training"] else status

    status = wait_for("training", finished, timeout=300)
    assert status["last_job"]["outcome"] == "succeeded", status


def listing(http: httpx.Client, user: str, **params: str) -> list[dict]:
    response = http.get("/getuserdata", params={"user": user, **params})
    assert response.status_code == 200, response.text
    return response.json()["images"]


def pending(http: httpx.Client) -> int:
    def answered() -> httpx.Response | None:
        response = http.get("/verifydatasets")
        # 503 while the gateway reconnects to a dataset service just restarted
        return None if response.status_code == 503 else response

    response = wait_for("the dataset service", answered, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["pending_predictions"]


def scored_listing(stack: Stack, user: str, count: int, **params: str) -> list[dict]:
    """The listing once all ``count`` items carry a current prediction and
    nothing is pending."""

    def ready() -> list[dict] | None:
        items = listing(stack.http, user, **params)
        done = len(items) == count and all(item["predicted"] is not None for item in items)
        return items if done and pending(stack.http) == 0 else None

    return wait_for(f"{user}'s predictions", ready, timeout=180)


def served(stack: Stack, user: str, **params: str) -> list[library_pb2.UserImage]:
    """The dataset service's own listing, with ``predicted_by``."""
    request = library_pb2.GetUserDataRequest(
        user=user, sort=library_pb2.SORT_ORDER_PREDICTED_DESC, rated=library_pb2.RATED_FILTER_NO
    )
    return list(stack.dataset_stub.library.GetUserData(request, timeout=DEADLINE).images)


def rate_by_name(http: httpx.Client, user: str, names: list[str]) -> list[float]:
    response = http.post("/ratebulk", data={"user": user, "image": names})
    assert response.status_code == 200, response.text
    return response.json()["ratings"]


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
