"""/trainuser, /trainerstatus and /stoptraining end to end: real HTTP to the
real gateway, real gRPC to a real trainer, rater (the embedded
EfficientNet-Lite0's features) and dataset service on SQLite. A rater with
a real taste -- red circles good, blue stripes bad -- rates drawn scenes
through /addrating; the trained model must then rank unseen scenes right."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tagrate_common.grpc_server import GrpcServer
from tagrate_common.vision.loaders import load_default_model
from tagrate_common.vision.torch_models import EfficientNetLiteModel
from tagrate_trainer.config import TrainerSettings
from tagrate_trainer.server import create_server as create_trainer_server
from tests.support import free_port
from tests.trainer.scenes import rated_scenes, scene
from tests.trainer.services import Services, start_services

from .answers import assert_error
from .conftest import GatewayServer, gateway_settings
from .stack import add_rating

STATUS_KEYS = {
    "is_training",
    "state",
    "current_user",
    "progress",
    "epoch",
    "epochs",
    "loss",
    "metrics",
    "started_at",
    "eta_seconds",
    "last_job",
}
LAST_JOB_KEYS = {"job_id", "user", "outcome", "metrics", "error", "started_at", "finished_at"}


@dataclass
class TrainingStack:
    services: Services
    trainers: list[GrpcServer]
    gateways: list[GatewayServer]
    data_dir: Path

    def gateway(self, **trainer_overrides: object) -> httpx.Client:
        """A new trainer (own jobs database) behind a new gateway, and a client for it."""
        settings = TrainerSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            data_dir=self.data_dir / f"trainer{len(self.trainers)}",
            dataset_addr=self.services.dataset_addr,
            rater_addr=self.services.rater_addr,
            shutdown_grace_seconds=0.5,
            **{"max_epochs": 60, "patience": 8, "retrain_after_ratings": 0, **trainer_overrides},
        )
        trainer = create_trainer_server(settings)
        self.trainers.append(trainer)
        gateway = GatewayServer(
            gateway_settings(
                self.services.dataset_addr,
                self.data_dir,
                rater_addr=self.services.rater_addr,
                trainer_addr=f"127.0.0.1:{trainer.start()}",
            )
        ).start()
        self.gateways.append(gateway)
        return httpx.Client(base_url=gateway.url, timeout=60)

    def stop(self) -> None:
        for gateway in self.gateways:
            gateway.stop()
        for trainer in self.trainers:
            trainer.stop(0.5)
        self.services.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[TrainingStack]:
    model: EfficientNetLiteModel = load_default_model("cpu")
    data_dir = tmp_path_factory.mktemp("training-e2e")
    running = TrainingStack(start_services(data_dir, model, scenes=0), [], [], data_dir)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def http(stack) -> Iterator[httpx.Client]:
    with stack.gateway() as client:
        yield client


def rate_through_api(http: httpx.Client, services: Services, user: str, items: list[tuple[bytes, float]]) -> None:
    for png, rating in items:
        response = add_rating(http, png, user, str(rating), "scene.png")
        assert response.status_code == 200, response.text
    services.cache_features([png for png, _ in items])


def wait_until(http: httpx.Client, done: Callable[[dict], bool], timeout: float = 60.0) -> list[dict]:
    """Polls /trainerstatus until ``done(status)``; returns every status seen."""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout
    while True:
        response = http.get("/trainerstatus")
        assert response.status_code == 200, response.text
        assert set(response.json()) == {"status"}
        seen.append(response.json()["status"])
        assert set(seen[-1]) == STATUS_KEYS
        if done(seen[-1]):
            return seen
        assert time.monotonic() < deadline, f"the trainer never got there: {seen[-1]}"
        time.sleep(0.02)


def test_learns_a_taste_and_ranks_unseen_images(stack, http):
    rate_through_api(http, stack.services, "ann", [(png, r) for png, _, r in rated_scenes(150, seed=11)])
    assert wait_until(http, lambda s: True)[-1]["state"] in ("idle", "succeeded", "failed", "stopped")

    response = http.get("/trainuser", params={"user": "ann"})
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["success"] is True and set(body["status"]) == STATUS_KEYS
    assert body["status"]["is_training"] and body["status"]["current_user"] == "ann"
    assert body["status"]["started_at"].endswith("Z")

    seen = wait_until(http, lambda s: not s["is_training"])
    final = seen[-1]
    assert final["state"] == "succeeded", final
    progress = [status["progress"] for status in seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert any(0.0 < p < 1.0 for p in progress)
    assert final["current_user"] is None and final["eta_seconds"] is None
    assert final["epoch"] >= 1 and final["loss"] is not None
    metrics = final["metrics"]
    # The held-out figures: a clear taste, learnt better than the mean does.
    assert metrics["spearman"] > 0.6, metrics
    assert metrics["spearman"] > metrics["mean_spearman"] + 0.5
    assert metrics["mae"] < 0.75 * metrics["mean_mae"], metrics
    last = final["last_job"]
    assert set(last) == LAST_JOB_KEYS
    assert (last["user"], last["outcome"], last["error"]) == ("ann", "succeeded", None)
    assert last["metrics"] == metrics and last["finished_at"] >= last["started_at"]

    # /rate now answers from ann's own model, in the order of her taste.
    unseen = [scene(t, seed=900 + i) for i, t in enumerate((0.95, 0.5, 0.05))]
    ratings = []
    for png in unseen:
        response = http.post("/rate", data={"user": "ann"}, files={"image": ("unseen.png", png)})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "personal"
        ratings.append(response.json()["rating"])
    assert ratings[0] > ratings[1] > ratings[2], ratings

    # /verifydatasets: up to date, until one more rating.
    def ann_state() -> dict:
        response = http.get("/verifydatasets")
        assert response.status_code == 200, response.text
        return next(user for user in response.json()["users"] if user["user"] == "ann")

    state = ann_state()
    assert state["model_up_to_date"] is True and state["trained_on_ratings"] == 150
    assert_error(http.get("/trainuser", params={"user": "ann"}), 409, "model_up_to_date")
    rate_through_api(http, stack.services, "ann", [(scene(0.7, seed=777), 0.7)])
    state = ann_state()
    assert state["model_up_to_date"] is False and state["ratings"] == 151


def test_parameter_and_state_errors(stack, http):
    rate_through_api(http, stack.services, "tiny", [(png, r) for png, _, r in rated_scenes(3, seed=12)])
    assert_error(http.get("/trainuser"), 400, "missing_parameter")
    assert_error(http.get("/trainuser", params={"user": "no/such"}), 400, "invalid_user")
    assert_error(http.get("/trainuser", params={"user": "nobody"}), 404)
    body = assert_error(http.get("/trainuser", params={"user": "tiny"}), 400, "not_enough_ratings")
    assert "3 ratings" in body["error"] and "10" in body["error"]
    assert_error(http.get("/trainuser", params={"user": "tiny", "force": "maybe"}), 400, "invalid_force")
    form = b'--XyZ\r\nContent-Disposition: form-data; name="user"\r\n\r\nnobody\r\n--XyZ--\r\n'
    multipart = {"content-type": "multipart/form-data; boundary=XyZ"}
    assert_error(http.post("/trainuser", content=form, headers=multipart), 404)
    a_file = {"image": ("ignored.txt", b"")}
    assert_error(http.post("/trainuser", data={"user": "nobody"}, files=a_file), 413, "too_many_files")
    assert_error(http.post("/trainuser", data={"user": "nobody"}), 404)  # urlencoded
    assert_error(http.post("/trainuser", data={"force": "true"}), 400, "missing_parameter")
    assert_error(http.post("/trainuser", content=b"user=tiny", headers={"content-type": "text/plain"}), 415)
    assert_error(http.get("/stoptraining"), 409, "not_training")
    assert_error(http.post("/stoptraining"), 409, "not_training")


def test_a_second_trainuser_while_one_runs_and_stop(stack):
    items = [(png, r) for png, _, r in rated_scenes(20, seed=13)]
    with stack.gateway(max_epochs=1_000_000, patience=1_000_000) as http:
        rate_through_api(http, stack.services, "bea", items)
        rate_through_api(http, stack.services, "cid", items[:10])
        # POST with form fields, as the table's form-data endpoints take them.
        response = http.post("/trainuser", data={"user": "bea"})
        assert response.status_code == 202, response.text
        wait_until(http, lambda s: s["state"] == "running" and s["epoch"] >= 1)
        for user in ("bea", "cid"):
            body = assert_error(http.get("/trainuser", params={"user": user}), 409, "training_running")
            assert "bea" in body["error"]
        # POST without a body: the query string.
        assert_error(http.post("/trainuser", params={"user": "cid"}), 409, "training_running")

        response = http.post("/stoptraining")
        assert response.status_code == 200, response.text
        assert response.json()["success"] is True
        final = wait_until(http, lambda s: not s["is_training"])[-1]
        assert final["state"] == "stopped" and final["last_job"]["outcome"] == "stopped"
        assert_error(http.get("/stoptraining"), 409, "not_training")
        verify = http.get("/verifydatasets").json()
        assert next(u for u in verify["users"] if u["user"] == "bea")["trained_at"] is None

        response = http.get("/trainuser", params={"user": "bea", "force": "true"})
        assert response.status_code == 202, response.text
        response = http.get("/stoptraining")
        assert response.status_code == 200 and response.json()["status"]["state"] in ("stopping", "stopped")


def test_trainer_unreachable_is_503(stack, tmp_path):
    settings = gateway_settings(stack.services.dataset_addr, tmp_path, trainer_addr=f"127.0.0.1:{free_port()}")
    gateway = GatewayServer(settings).start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            body = assert_error(http.get("/trainerstatus"), 503)
            assert "trainer" in body["error"]
            assert_error(http.get("/stoptraining"), 503)
    finally:
        gateway.stop()
