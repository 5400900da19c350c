"""Predictions on the whole library end to end (issue 13): real HTTP to the
real gateway, a real trainer, and the dataset service and rater as their
own processes (so they can be killed) on SQLite. A user with a real taste
-- red circles good, blue stripes bad (tests/trainer/scenes.py) -- rates
drawn scenes; after /trainuser the images they have not rated, sorted by
prediction, must put the red circles first, and every stored score must
equal what /rate answers for the same stored image."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator

import grpc
import httpx
import numpy as np
import pytest

from tagrate_common.protos import rater_pb2
from tagrate_trainer.config import TrainerSettings
from tagrate_trainer.server import create_server as create_trainer_server
from tests.support import ServiceProcess, free_port
from tests.trainer.scenes import rated_scenes

from .answers import assert_error
from .conftest import GatewayServer, gateway_settings
from .predictions_support import (
    DEADLINE,
    EVERY_VECTOR,
    RATED,
    TOLERANCE,
    UNRATED,
    Stack,
    _dataset_env,
    _rater_env,
    listing,
    pending,
    rate_all,
    rate_by_name,
    scored_listing,
    served,
    spearman,
    train,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("predictions-e2e")
    db = data_dir / "tagrate.db"
    ports = {name: free_port() for name in ("dataset", "rater")}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    # Small chunks: rescoring a few thousand images takes long enough to be
    # interrupted half-way.
    dataset = ServiceProcess(
        "tagrate_dataset",
        _dataset_env(ports["dataset"], db, addr["rater"], data_dir, chunk=16),
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
                retrain_after_ratings=0,  # these tests train by request
            )
        )
        trainer_addr = f"127.0.0.1:{trainer.start()}"
        started.append(trainer)
        gateway = GatewayServer(
            gateway_settings(
                addr["dataset"],
                data_dir,
                rater_addr=addr["rater"],
                trainer_addr=trainer_addr,
                max_bulk_files=64,
                bulk_chunk_files=8,
            )
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


# ---- the tests -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ann(stack: Stack) -> str:
    """A user with ratings that follow a taste (red circles), so each test
    that trains her works on its own as well as after the others."""
    rate_all(stack.http, "ann", [(png, r) for png, _, r in rated_scenes(RATED, seed=31)])
    # The dataset service embeds every new image in the background; training
    # streams only images whose vector is cached.
    wait_for("the vectors", lambda: stack.sql(EVERY_VECTOR)[0][0] == 1)
    return "ann"


def test_unrated_images_sorted_by_prediction_follow_the_taste(stack: Stack, ann: str) -> None:
    http = stack.http
    unrated = rated_scenes(UNRATED, seed=32)
    pool = rate_all(http, "pool", [(png, 0.5) for png, _, _ in unrated])
    taste_of = {name: t for name, (_, t, _) in zip(pool, unrated, strict=True)}
    # The dataset service embeds every new image in the background; training
    # streams only images whose vector is cached.
    wait_for("the vectors", lambda: stack.sql(EVERY_VECTOR)[0][0] == 1)
    assert all(item["predicted"] is None for item in listing(http, "ann", rated="no"))

    train(http, "ann")
    items = scored_listing(stack, "ann", UNRATED, rated="no", sort="predicted-desc")
    order = [item["image"] for item in items]
    predicted = [item["predicted"] for item in items]
    assert predicted == sorted(predicted, reverse=True)
    # Red circles first: the order follows the scenes' proportion of circles.
    assert spearman(predicted, [taste_of[name] for name in order]) > 0.7
    top, bottom = order[: UNRATED // 4], order[-UNRATED // 4 :]
    assert min(taste_of[n] for n in top) > max(taste_of[n] for n in bottom)
    ascending = listing(http, "ann", rated="no", sort="predicted-asc")
    assert [item["image"] for item in ascending] == order[::-1] or [i["predicted"] for i in ascending] == sorted(
        predicted
    )
    assert all(row.predicted_by == "personal" for row in served(stack, "ann"))

    # Exact: /rate and /ratebulk of the stored image by name answer the stored score.
    by_name = dict(zip(order, predicted, strict=True))
    for name in order[:3]:
        for field in ("image", "filename"):
            response = http.post("/rate", data={"user": "ann", field: name})
            assert response.status_code == 200, response.text
            assert abs(response.json()["rating"] - by_name[name]) < TOLERANCE
            assert response.json()["model"] == "personal"
        response = http.post("/rate", params={"user": "ann", "image": name})  # query fields, no body
        assert abs(response.json()["rating"] - by_name[name]) < TOLERANCE, response.text
    bulk = rate_by_name(http, "ann", order)  # more names than one Rate chunk
    assert all(abs(got - by_name[name]) < TOLERANCE for got, name in zip(bulk, order, strict=True))
    response = http.post("/ratebulk", params=[("user", "ann"), ("image", order[0]), ("filename", order[1])])
    assert [abs(a - by_name[n]) < TOLERANCE for a, n in zip(response.json()["ratings"], order[:2], strict=True)] == [
        True,
        True,
    ], response.text


def test_rate_by_name_errors(stack: Stack, ann: str) -> None:
    http = stack.http
    [one] = [item["image"] for item in listing(stack.http, "ann", rated="yes", page="1", limit="1")]
    missing = "0" * 64 + ".png"
    body = assert_error(http.post("/rate", data={"user": "ann", "image": missing}), 404)
    assert missing in body["error"]
    body = assert_error(http.post("/ratebulk", data={"user": "ann", "image": [one, missing]}), 404)
    assert missing in body["error"]
    assert_error(http.post("/rate", data={"user": "ann", "image": "../etc/passwd"}), 400)
    assert_error(http.post("/ratebulk", data={"user": "ann", "image": [one, "no such name"]}), 400)
    # One image on /rate: a repeat is refused; uploads and names do not mix.
    assert_error(http.post("/rate", data={"user": "ann", "image": [one, one]}), 400, "repeated_parameter")
    png = rated_scenes(1, seed=33)[0][0]
    mixed = http.post("/rate", params={"image": one}, data={"user": "ann"}, files={"image": ("x.png", png)})
    assert_error(mixed, 400, "conflicting_parameters")
    mixed = http.post("/ratebulk", data={"user": "ann", "image": one}, files=[("images", ("x.png", png))])
    assert_error(mixed, 400, "conflicting_parameters")
    assert_error(http.post("/rate", data={"user": "ann"}), 400, "missing_parameter")
    assert_error(http.post("/ratebulk", data={"user": "ann", "image": [one] * 65}), 413, "too_many_files")
    # Uploads still work as before.
    response = http.post("/rate", data={"user": "ann"}, files={"image": ("x.png", png)})
    assert response.status_code == 200, response.text


def test_users_without_a_model_carry_the_global_score(stack: Stack) -> None:
    http = stack.http
    # cid rated a few images, too few for a model of their own; dee rates
    # with the same taste as ann, so the global model has a clear one.
    rate_all(http, "cid", [(png, r) for png, _, r in rated_scenes(3, seed=35)])
    rate_all(http, "dee", [(png, r) for png, _, r in rated_scenes(RATED, seed=36)])
    wait_for("the vectors", lambda: stack.sql(EVERY_VECTOR)[0][0] == 1)
    assert all(item["predicted"] is None for item in listing(http, "cid"))
    train(http, "all")
    unrated = len(listing(http, "cid", rated="no"))
    items = scored_listing(stack, "cid", unrated, rated="no", sort="predicted-desc")
    rows = served(stack, "cid")
    assert [row.image for row in rows] == [item["image"] for item in items]
    assert {row.predicted_by for row in rows} == {"global"}
    reply = http.post("/rate", data={"user": "cid", "image": items[0]["image"]}).json()
    assert reply["model"] == "global" and abs(reply["rating"] - items[0]["predicted"]) < TOLERANCE
    # ann keeps her own model's scores.
    assert {row.predicted_by for row in served(stack, "ann")} == {"personal"}


def test_new_images_deletes_and_a_new_model(stack: Stack) -> None:
    http = stack.http
    unrated = len(listing(http, "ann", rated="no"))
    before = scored_listing(stack, "ann", unrated, rated="no", sort="predicted-desc")
    version = http.post("/rate", data={"user": "ann", "image": before[0]["image"]}).json()["model_version"]

    # A new upload (by someone else) is scored for ann without any training.
    png = rated_scenes(1, seed=34)[0][0]
    [new] = rate_all(http, "pool", [(png, 0.5)])
    items = scored_listing(stack, "ann", unrated + 1, rated="no", sort="predicted-desc")
    score = {item["image"]: item["predicted"] for item in items}[new]
    assert abs(http.post("/rate", data={"user": "ann", "image": new}).json()["rating"] - score) < TOLERANCE

    # A deleted image's scores are gone.
    (image_id,) = stack.sql("SELECT id FROM images WHERE name = ?", new)[0]
    assert stack.sql("SELECT count(*) FROM predictions WHERE image_id = ?", image_id)[0][0] >= 1
    response = http.post("/deleteimage", data={"image": new})
    assert response.status_code == 200, response.text
    assert stack.sql("SELECT count(*) FROM predictions WHERE image_id = ?", image_id)[0][0] == 0

    # ann changes her mind (stripes good, circles bad) and trains again: a
    # new version rescoring every image, the order reversed.
    liked = rated_scenes(RATED, seed=31)
    rate_all(http, "ann", [(png, round(1.0 - r, 4)) for png, _, r in liked])
    train(http, "ann")

    def rescored() -> list[dict] | None:
        reply = http.post("/rate", data={"user": "ann", "image": before[0]["image"]}).json()
        return None if reply["model_version"] == version else reply

    wait_for("the new model", rescored)
    after = scored_listing(stack, "ann", unrated, rated="no", sort="predicted-desc")
    old_rank = {item["image"]: i for i, item in enumerate(before)}
    assert spearman([old_rank[i["image"]] for i in after], list(range(unrated))) < -0.5
    versions = stack.sql(
        "SELECT DISTINCT p.model_version FROM predictions p JOIN users u ON u.id = p.user_id WHERE u.name = 'ann'"
    )
    assert len(versions) == 1 and versions[0][0] != version
    bulk = rate_by_name(http, "ann", [item["image"] for item in after[:40]])
    assert all(abs(got - item["predicted"]) < TOLERANCE for got, item in zip(bulk, after[:40], strict=True))


# ---- crashes during rescoring ----------------------------------------------------

SYNTHETIC = 5000


def _add_synthetic_images(stack: Stack, count: int) -> None:
    """``count`` stored images with cached vectors of the rater's extractor,
    written straight into the (stopped) dataset service's database: enough
    rows to make a rescoring take seconds without embedding thousands of
    pictures. Their vectors are random, like the bench's."""
    rng = np.random.default_rng(5)
    with sqlite3.connect(stack.db, timeout=30) as conn:
        (created,) = conn.execute("SELECT created_at FROM images LIMIT 1").fetchone()
        (extractor, dim) = conn.execute("SELECT extractor_id, dim FROM image_features LIMIT 1").fetchone()
        for _ in range(count):
            sha = rng.bytes(32).hex()
            cursor = conn.execute(
                "INSERT INTO images (sha256, name, format, size_bytes, width, height, original_filename, "
                "created_at, source) VALUES (?, ?, 'PNG', 1, 1, 1, '', ?, '')",
                (sha, f"{sha}.png", created),
            )
            vector = rng.normal(0, 1, dim).astype("<f4").tobytes()
            conn.execute(
                "INSERT INTO image_features (image_id, extractor_id, dim, vector, created_at) VALUES (?, ?, ?, ?, ?)",
                (cursor.lastrowid, extractor, dim, vector, created),
            )


def _fresh_scores(stack: Stack, user: str) -> dict[int, float]:
    """Every cached vector scored now by the head serving ``user``."""
    rows = stack.sql("SELECT image_id, extractor_id, dim, vector FROM image_features ORDER BY image_id")
    scores: dict[int, float] = {}
    for start in range(0, len(rows), 500):
        chunk = rows[start : start + 500]
        request = rater_pb2.ScoreFeaturesRequest(
            subjects=[user],
            extractor_id=chunk[0][1],
            dimensions=chunk[0][2],
            vectors=b"".join(row[3] for row in chunk),
        )
        [answer] = stack.rater_stub.ScoreFeatures(request, timeout=DEADLINE).subjects
        scores.update(zip((row[0] for row in chunk), answer.scores, strict=True))
    return scores


def _stored_scores(stack: Stack, user: str) -> dict[int, tuple[float, str]]:
    return {
        image_id: (score, version)
        for image_id, score, version in stack.sql(
            "SELECT p.image_id, p.score, p.model_version FROM predictions p JOIN users u ON u.id = p.user_id "
            "WHERE u.name = ?",
            user,
        )
    }


def _interrupt_midway(stack: Stack, total: int, interrupt: Callable[[], None]) -> int:
    """Waits until the rescoring is well under way, then ``interrupt()``s;
    returns the pending predictions seen just before."""

    def midway() -> int | None:
        left = pending(stack.http)
        assert left > 0, "the rescoring finished before it could be interrupted"
        return left if left < 0.8 * total else None

    left = wait_for("the rescoring to get going", midway, timeout=120)
    interrupt()
    return left


def _assert_current(stack: Stack, user: str) -> None:
    """Every stored image carries the serving model's score for ``user``,
    equal to a fresh computation."""
    wait_for("the rescoring to finish", lambda: pending(stack.http) == 0, timeout=240)
    version = stack.http.post("/rate", data={"user": user, "image": _a_real_image(stack)}).json()["model_version"]
    fresh = _fresh_scores(stack, user)
    stored = _stored_scores(stack, user)
    (images,) = stack.sql("SELECT count(*) FROM images")[0]
    assert len(fresh) == images and set(stored) == set(fresh)
    assert {v for _, v in stored.values()} == {version}
    worst = max(abs(stored[i][0] - fresh[i]) for i in fresh)
    assert worst < TOLERANCE, worst


def _a_real_image(stack: Stack) -> str:
    return listing(stack.http, "ann", rated="yes", page="1", limit="1")[0]["image"]


def test_a_killed_rater_and_a_restarted_dataset_service_lose_no_scores(stack: Stack, ann: str) -> None:
    http = stack.http
    stack.dataset.terminate()
    _add_synthetic_images(stack, SYNTHETIC)
    # Tiny chunks: thousands of transactions, so the rescoring takes seconds.
    stack.dataset.env["DATASET_SCORE_CHUNK_IMAGES"] = "4"
    stack.dataset.start(timeout=120)
    (images,) = stack.sql("SELECT count(*) FROM images")[0]

    # SIGKILL of the rater half-way: the rescoring pauses, nothing is lost,
    # and it resumes from its last chunk once a rater is back.
    train(http, "ann")
    left = _interrupt_midway(stack, images, stack.rater.kill)
    time.sleep(1.0)
    stalled = pending(http)
    assert 0 < stalled <= left
    time.sleep(1.0)
    assert pending(http) == stalled  # no rater: no progress, no loss
    stack.rater.start(timeout=180)
    _assert_current(stack, "ann")

    # A restart of the dataset service half-way resumes where it stopped.
    train(http, "ann")
    _interrupt_midway(stack, images, lambda: stack.dataset.terminate())
    stack.dataset.start(timeout=120)
    _assert_current(stack, "ann")

    # And a SIGKILL of it too.
    train(http, "ann")
    _interrupt_midway(stack, images, stack.dataset.kill)
    stack.dataset.start(timeout=120)
    _assert_current(stack, "ann")
