"""The taste loop end to end (issue 26): real HTTP to the real gateway, a
real trainer with automatic retraining on, and the dataset service and rater
as their own processes on SQLite (the dataset service embeds new images and
scores predictions itself). A user with a real taste -- red circles good,
blue stripes bad (tests/trainer/scenes.py) -- rates a burst of 100 scenes
through /addrating and never calls /trainuser: one or two automatic
trainings follow, predictions of the unrated scenes appear and rank by the
taste; /getratenext never lists a rated image, is diverse and changes after
a retrain; /explain's neighbours are rated images by similarity; an older
model version serves again on request and the predictions follow."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from tagrate_trainer.config import TrainerSettings
from tagrate_trainer.server import create_server as create_trainer_server
from tests.support import ServiceProcess, free_port
from tests.trainer.scenes import rated_scenes

from .answers import assert_error
from .conftest import GatewayServer, gateway_settings
from .test_predictions_e2e import EVERY_VECTOR, Stack, _dataset_env, _rater_env, rate_all, wait_for

pytestmark = pytest.mark.slow

BURST = 100
UNRATED = 40


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("tasteloop-e2e")
    db = data_dir / "tagrate.db"
    ports = {name: free_port() for name in ("dataset", "rater")}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    dataset = ServiceProcess(
        "tagrate_dataset",
        _dataset_env(ports["dataset"], db, addr["rater"], data_dir, chunk=64),
        data_dir / "dataset.log",
        addr["dataset"],
    )
    rater = ServiceProcess(
        "tagrate_rater", _rater_env(ports["rater"], addr["dataset"], data_dir), data_dir / "rater.log", addr["rater"]
    )
    started: list[object] = []
    try:
        started.append(dataset.start(timeout=120))
        started.append(rater.start(timeout=180))
        trainer = create_trainer_server(
            TrainerSettings(
                host="127.0.0.1",
                port=0,
                metrics_port=0,
                data_dir=data_dir / "trainer",
                dataset_addr=addr["dataset"],
                rater_addr=addr["rater"],
                shutdown_grace_seconds=0.5,
                max_epochs=60,
                patience=8,
                retrain_after_ratings=10,
                retrain_min_interval_seconds=600,  # the burst must not train more than twice
                retrain_quiet_seconds=3,
                retrain_poll_seconds=0.3,
            )
        )
        trainer_addr = f"127.0.0.1:{trainer.start()}"
        started.append(trainer)
        gateway = GatewayServer(
            gateway_settings(addr["dataset"], data_dir, rater_addr=addr["rater"], trainer_addr=trainer_addr)
        ).start()
        started.append(gateway)
        channels = [grpc.insecure_channel(addr["dataset"]), grpc.insecure_channel(addr["rater"])]
        with httpx.Client(base_url=gateway.url, timeout=120) as http:
            yield Stack(data_dir, db, dataset, rater, trainer, gateway, http, channels)
        for channel in channels:
            channel.close()
    finally:
        for thing in reversed(started):
            if isinstance(thing, ServiceProcess):
                if thing.proc is not None and thing.proc.poll() is None:
                    thing.kill()
            elif isinstance(thing, GatewayServer):
                thing.stop()
            else:
                thing.stop(0.5)  # type: ignore[attr-defined]


def automatic_jobs(data_dir: Path, user: str) -> list[tuple[str, str | None]]:
    """(state, model version) of the user's automatic jobs, oldest first."""
    with sqlite3.connect(f"file:{data_dir / 'trainer' / 'trainer' / 'jobs.db'}?mode=ro", uri=True) as conn:
        return conn.execute(
            'SELECT state, model_version FROM training_jobs WHERE "user" = ? AND automatic ORDER BY started_at',
            (user,),
        ).fetchall()


def unrated_predictions(http: httpx.Client, user: str) -> dict[str, float | None]:
    response = http.get("/getuserdata", params={"user": user, "rated": "no"})
    assert response.status_code == 200, response.text
    return {item["image"]: item["predicted"] for item in response.json()["images"]}


def test_the_loop_runs_itself(stack):
    http = stack.http
    scenes = rated_scenes(BURST + UNRATED, seed=26)
    taste, pngs = {}, {}
    # Scenes nobody but "pool" rated: what ann's model must rank, and what she is asked to rate.
    pool = scenes[BURST:]
    for name, (png, t, r) in zip(rate_all(http, "pool", [(p, 0.5) for p, _, _ in pool]), pool, strict=True):
        taste[name], pngs[name] = t, (png, r)
    wait_for("every image's vector", lambda: stack.sql(EVERY_VECTOR)[0][0] == 1, timeout=180)

    # Cold start: a spread over the library, before ann has a model.
    assert_error(http.get("/getratenext", params={"user": "ann"}), 404)
    rate_all(http, "ann", [(scenes[0][0], scenes[0][2])])
    cold = http.get("/getratenext", params={"user": "ann", "limit": 10}).json()
    assert cold["strategy"] == "typical-and-variance" and cold["model_version"] is None and len(cold["images"]) == 10

    # The burst: 100 ratings, no /trainuser.
    rate_all(http, "ann", [(p, r) for p, _, r in scenes[1:BURST]])

    def trained() -> list | None:
        jobs = automatic_jobs(stack.data_dir, "ann")
        return jobs if jobs and all(state not in ("running", "stopping") for state, _ in jobs) else None

    jobs = wait_for("an automatic training", trained, timeout=300)
    assert 1 <= len(jobs) <= 2 and jobs[-1][0] == "succeeded", jobs
    assert http.get("/trainerstatus").json()["status"]["last_job"]["user"] == "ann"

    # Fresh predictions of the unrated scenes, without /trainuser, in the taste's order.
    predicted = wait_for(
        "predictions by ann's model",
        lambda: (p := unrated_predictions(http, "ann")) and all(v is not None for v in p.values()) and p,
        timeout=180,
    )
    names = sorted(taste)
    correlation = np.corrcoef([taste[n] for n in names], [predicted[n] for n in names])[0, 1]
    assert correlation < -0.5 or correlation > 0.5, correlation  # the taste, whichever way t maps to it

    # /getratenext now: ann's model, never a rated image, diverse.
    queue = http.get("/getratenext", params={"user": "ann", "limit": 10}).json()
    assert queue["strategy"] == "typical-and-variance" and queue["model_version"] == jobs[-1][1]
    listed = [item["image"] for item in queue["images"]]
    assert len(listed) == 10 and not set(listed) & set(rated_names(http, "ann"))
    assert all(item["predicted"] is not None for item in queue["images"])
    # Diverse by the scenes' own parameter: the picks spread over t, not one narrow band.
    ts = sorted(taste[n] for n in listed)
    assert ts[-1] - ts[0] > 0.5, ts

    # /explain: rated neighbours, most similar first.
    target = listed[0]
    why = http.get("/explain", params={"user": "ann", "image": target, "limit": 5}).json()
    assert why["image"] == target and why["model_version"] == jobs[-1][1] and why["predicted"] is not None
    sims = [n["similarity"] for n in why["neighbours"]]
    assert len(sims) == 5 and sims == sorted(sims, reverse=True)
    assert all(n["image"] in set(rated_names(http, "ann")) for n in why["neighbours"])
    assert_error(http.get("/explain", params={"user": "ann", "image": "0" * 64 + ".png"}), 404)
    assert_error(http.get("/explain", params={"user": "pool", "image": target}), 409, "no_model")

    # ann rates the queue's first three; /trainuser still trains at once
    # (the automatic interval is long here); the queue follows the new model.
    rate_all(http, "ann", [pngs[name] for name in listed[:3]])
    response = http.get("/trainuser", params={"user": "ann", "force": "true"})
    assert response.status_code == 202, response.text
    wait_for("the requested training", lambda: not http.get("/trainerstatus").json()["status"]["is_training"])
    again = http.get("/getratenext", params={"user": "ann", "limit": 10}).json()
    assert again["model_version"] != queue["model_version"]
    refreshed = [item["image"] for item in again["images"]]
    assert refreshed != listed and not set(refreshed) & set(rated_names(http, "ann"))

    # Model history: both versions kept with their figures; switching back
    # to the first rescores the predictions, and /getuserdata follows.
    history = http.get("/getmodels", params={"user": "ann"}).json()
    versions = [v["version"] for v in history["versions"]]
    assert versions[0] == again["model_version"] and jobs[-1][1] in versions
    assert [v["serving"] for v in history["versions"]] == [True] + [False] * (len(versions) - 1)
    first = history["versions"][versions.index(jobs[-1][1])]
    assert first["trained_on_ratings"] == BURST and {"spearman", "mae"} <= set(first["metrics"])
    assert history["versions"][0]["trained_on_ratings"] == BURST + 3
    assert_error(http.post("/usemodel", params={"user": "ann", "version": "v99-nothere"}), 404, "version_not_found")
    chosen = http.post("/usemodel", params={"user": "ann", "version": jobs[-1][1]})
    assert chosen.status_code == 200 and chosen.json()["version"] == jobs[-1][1], chosen.text
    serving = {v["version"]: v["serving"] for v in http.get("/getmodels", params={"user": "ann"}).json()["versions"]}
    assert serving[jobs[-1][1]] is True and sum(serving.values()) == 1
    still_unrated = set(unrated_predictions(http, "ann"))

    def rescored() -> bool:
        now = unrated_predictions(http, "ann")
        return all(now[n] is not None and abs(now[n] - predicted[n]) < 1e-5 for n in still_unrated)

    wait_for("predictions by the first model again", rescored, timeout=180)
    verify = http.get("/verifydatasets").json()
    ann = next(u for u in verify["users"] if u["user"] == "ann")
    assert ann["trained_on_ratings"] == BURST and ann["model_up_to_date"] is False


def rated_names(http: httpx.Client, user: str) -> list[str]:
    response = http.get("/getuserdata", params={"user": user})
    assert response.status_code == 200, response.text
    return [item["image"] for item in response.json()["images"]]
