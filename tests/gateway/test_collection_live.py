"""Collection management against real model services, through the gateway:

- /deleteimage of an image whose background tagging is in flight, with the
  dataset service and a real tagger (the default EfficientNet-Lite0) as
  processes on SQLite: the image goes completely, the rest of the queue is
  tagged, and the worker neither fails nor parks anything over it;
- /ratebulk with 200 files (the original's chat bot sends up to 200 per
  request) against a real rater with published heads: the ratings come back
  in upload order and equal /rate's for the same images.
"""

from __future__ import annotations

import io
import logging
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tagrate_common.protos import rater_pb2, rater_pb2_grpc
from tagrate_common.vision.models import ImageModel
from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_dataset.server import create_server as create_dataset_server
from tagrate_gateway.config import GatewaySettings
from tagrate_rater.config import RaterSettings
from tagrate_rater.server import create_server as create_rater_server
from tests.imagefactory import make_image
from tests.support import ServiceProcess, dataset_settings, free_port

from .answers import assert_error
from .conftest import GatewayServer, gateway_settings
from .stack import add_rating, stored_name

# ---- delete during background tagging -------------------------------------------

TAG_BATCH = 4  # images per background Tag call
FIRST_IMAGES = 8  # uploaded while the tagger runs: the worker is busy with them
LATER_IMAGES = 12  # uploaded while the tagger is paused: queued, not claimed
IMAGE_SIZE = (320, 240)
DRAIN_TIMEOUT = 180.0
# Rows of every table that holds an image's data, by image id.
IMAGE_TABLES = (
    "ratings",
    "image_tags",
    "image_taggings",
    "image_features",
    "work_items",
    "predictions",
    "pending_scores",
)
ERROR_LINE = re.compile(r"^\S+ (ERROR|CRITICAL) |Traceback", re.MULTILINE)


@dataclass
class LiveStack:
    tagger: ServiceProcess
    dataset: ServiceProcess
    data_dir: Path
    db_path: Path
    http: httpx.Client

    def query(self, sql: str, *args: Any) -> list[tuple]:
        """Reads the dataset service's SQLite file as it is now (read-only,
        each call its own transaction)."""
        with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, isolation_level=None) as conn:
            return conn.execute(sql, args).fetchall()

    def tag_work(self, claimed: bool) -> set[str]:
        """Images whose tag work is pending and leased to a worker (claimed),
        or pending and waiting (not claimed)."""
        lease = "IS NOT NULL" if claimed else "IS NULL"
        rows = self.query(
            "SELECT i.name FROM work_items w JOIN images i ON i.id = w.image_id "
            f"WHERE w.kind = 'tag' AND w.state = 'pending' AND w.leased_until {lease}"
        )
        return {name for (name,) in rows}

    def tagged(self) -> set[str]:
        rows = self.query("SELECT i.name FROM image_taggings t JOIN images i ON i.id = t.image_id")
        return {name for (name,) in rows}

    def pause_tagger(self) -> None:
        assert self.tagger.proc is not None
        self.tagger.proc.send_signal(signal.SIGSTOP)

    def resume_tagger(self) -> None:
        assert self.tagger.proc is not None
        self.tagger.proc.send_signal(signal.SIGCONT)

    def files_of(self, name: str) -> list[Path]:
        """Every file under the data directory named after the image (blob,
        resized copies, thumbnails, temporary files)."""
        sha = name.split(".")[0]
        return [path for path in self.data_dir.rglob("*") if sha in path.name and path.is_file()]


@contextmanager
def live_stack(tmp_path: Path) -> Iterator[LiveStack]:
    """A tagger and a dataset service (SQLite, background work on, no rater)
    as processes, and a gateway in this process in front of them."""
    data_dir, db_path = tmp_path / "data", tmp_path / "tagrate.db"
    data_dir.mkdir()
    ports = {name: free_port() for name in ("tagger", "dataset")}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    tagger = ServiceProcess(
        "tagrate_tagger",
        {
            "TAGRATE_DATA_DIR": str(tmp_path / "tagger"),
            "TAGGER_HOST": "127.0.0.1",
            "TAGGER_PORT": str(ports["tagger"]),
            "TAGGER_METRICS_PORT": "0",
            "TAGGER_DEVICE": "cpu",
            "TAGGER_SHUTDOWN_GRACE_SECONDS": "1",
        },
        tmp_path / "tagger.log",
        addr["tagger"],
    )
    dataset = ServiceProcess(
        "tagrate_dataset",
        {
            "TAGRATE_DATA_DIR": str(data_dir),
            "DATABASE_URL": f"sqlite:///{db_path}",
            "DATASET_HOST": "127.0.0.1",
            "DATASET_PORT": str(ports["dataset"]),
            "DATASET_METRICS_PORT": "0",
            "DATASET_TAGGER_ADDR": addr["tagger"],
            "DATASET_RATER_ADDR": "",
            "DATASET_TAG_BATCH_SIZE": str(TAG_BATCH),
            # Long enough that the paused tagger's call never times out: a
            # timeout would charge the batch an attempt, which is not what
            # this test is about.
            "DATASET_TAGGER_TIMEOUT_SECONDS": "120",
            "DATASET_WORK_POLL_SECONDS": "0.2",
            "DATASET_SHUTDOWN_GRACE_SECONDS": "1",
        },
        tmp_path / "dataset.log",
        addr["dataset"],
    )
    gateway: GatewayServer | None = None
    started: list[ServiceProcess] = []
    try:
        started.append(tagger.start(timeout=180))
        started.append(dataset.start(timeout=120))
        settings = gateway_settings(addr["dataset"], tmp_path / "gateway", max_upload_bytes=4 << 20)
        gateway = GatewayServer(settings).start()
        with httpx.Client(base_url=gateway.url, timeout=60) as http:
            yield LiveStack(tagger, dataset, data_dir, db_path, http)
    finally:
        if gateway is not None:
            gateway.stop()
        for service in reversed(started):
            assert service.proc is not None
            service.proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            if service.terminate() != 0:
                pytest.fail(f"{service.module} did not stop cleanly:\n{service.log()}")


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def pause_with_a_batch_in_flight(stack: LiveStack) -> set[str]:
    """Pauses the tagger process while the worker has a batch claimed, and
    returns that batch. After the pause the claim is read again until it
    holds still: a batch still claimed then is in the worker's Tag call
    (claiming, reading the blobs and sending take milliseconds), which
    cannot return while the tagger is stopped. Caught between batches (no
    claim), the tagger is resumed and the next batch is tried."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        wait_for("the worker to claim a batch of tag work", lambda: stack.tag_work(claimed=True), 60)
        stack.pause_tagger()
        time.sleep(0.5)
        batch = stack.tag_work(claimed=True)
        time.sleep(0.3)
        if batch and stack.tag_work(claimed=True) == batch and not batch & stack.tagged():
            return batch
        stack.resume_tagger()
    raise AssertionError("never caught the worker with a batch in flight")


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_delete_during_background_tagging_with_a_real_tagger(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = [make_image("JPEG", IMAGE_SIZE, seed=900 + i) for i in range(FIRST_IMAGES + LATER_IMAGES)]
    names = [stored_name(data, "jpg") for data in images]
    with live_stack(tmp_path) as stack:
        http = stack.http
        for data in images[:FIRST_IMAGES]:
            ok(add_rating(http, data, "alice", "0.5"))
        in_flight = pause_with_a_batch_in_flight(stack)
        try:
            # While the tagger is stopped nothing more is claimed: these wait in the queue.
            for data in images[FIRST_IMAGES:]:
                ok(add_rating(http, data, "alice", "0.25"))
            queued = stack.tag_work(claimed=False)
            assert set(names[FIRST_IMAGES:]) <= queued
            target, waiting = sorted(in_flight)[0], names[-1]
            ok(http.post("/updaterating", json={"image": target, "user": "bob", "rating": 0.9}))

            assert ok(http.post("/deleteimage", data={"image": target}))["ratings_removed"] == 2
            assert ok(http.get("/deleteimage", params={"image": waiting}))["ratings_removed"] == 1
            # The delete committed while the batch was in the Tag call: the
            # rest of it is still claimed and none of it stored (a batch is
            # stored in one transaction).
            assert stack.tag_work(claimed=True) == in_flight - {target}
            assert not in_flight & stack.tagged()
        finally:
            stack.resume_tagger()

        deleted = {target, waiting}
        kept = [name for name in names if name not in deleted]

        def drained() -> dict | None:
            state = ok(http.get("/verifydatasets"))
            return state if state["untagged_images"] == 0 and state["work"]["tag"]["pending"] == 0 else None

        state = wait_for("the queue to drain", drained, DRAIN_TIMEOUT, interval=0.2)
        # Nothing failed or parked; the embed work (no rater here) is owed for the kept images only.
        assert state["work"] == {
            "tag": {"pending": 0, "failed": 0},
            "embed": {"pending": len(kept), "failed": 0},
            "hash": {"pending": 0, "failed": 0},
        }
        assert state["failed_work"] == []
        assert {(u["user"], u["ratings"]) for u in state["users"]} == {("alice", len(kept)), ("bob", 0)}

        # The deleted images are gone everywhere.
        for name in deleted:
            for path in ("/getimage", "/getimagetags", "/getthumbnail"):
                assert_error(http.get(path, params={"image": name}), 404)
            assert_error(http.get("/deleteimage", params={"image": name}), 404)
        for user in ("alice", "bob"):
            listed = ok(http.get("/getuserdata", params={"user": user, "rated": "all"}))["images"]
            assert sorted(item["image"] for item in listed) == sorted(kept)
        assert stack.query("SELECT name FROM images WHERE name IN (?, ?)", *deleted) == []
        live_ids = {image_id for (image_id,) in stack.query("SELECT id FROM images")}
        assert len(live_ids) == len(kept)
        for table in IMAGE_TABLES:
            rows = stack.query(f"SELECT DISTINCT image_id FROM {table}")
            assert {image_id for (image_id,) in rows} <= live_ids, table
        for name in deleted:
            assert stack.files_of(name) == [], name
        for name in kept:
            assert stack.files_of(name), name  # the check above looks in the right place

        # Every other image is tagged by the real model, the in-flight batch's included.
        model = None
        for name in kept:
            tags = ok(http.get("/getimagetags", params={"image": name}))
            assert tags["tagged"] is True, tags
            model = model or tags["model"]
            assert tags["model"] == model and model.startswith("efficientnet-lite0")
        assert stack.tagged() == set(kept)

        # Healthy: no failed attempt, nothing logged at ERROR anywhere.
        dataset_log = stack.dataset.log_path.read_text(errors="replace")
        assert not ERROR_LINE.search(dataset_log), dataset_log[-5000:]
        assert "work for image" not in dataset_log  # a failed or parked attempt names its image
        tagger_log = stack.tagger.log_path.read_text(errors="replace")
        assert not ERROR_LINE.search(tagger_log), tagger_log[-5000:]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


# ---- /ratebulk with 200 files ---------------------------------------------------

BULK_IMAGES = 200  # what the original's chat bot sends at most
DIMENSIONS = 1280
SAMPLE = (0, 1, 31, 32, 63, 64, 100, 127, 128, 150, 198, 199)  # both sides of the 32-file chunks
# The gateway answers six significant digits: the same rating computed in
# another batch (float32 sums in another order) may round one step away,
# 1e-6, which in binary is a few 1e-17 more than the literal 1e-6.
TOLERANCE = 1e-6 * (1 + 1e-9)


def small_photos(count: int) -> list[bytes]:
    """``count`` distinct small JPEGs cut from real photographs."""
    rng = np.random.default_rng(200)
    sources = [getattr(skimage.data, name)() for name in ("chelsea", "coffee", "rocket", "astronaut")]
    photos = []
    for i in range(count):
        pixels = sources[i % len(sources)]
        side = int(rng.integers(48, 128))
        top = int(rng.integers(0, pixels.shape[0] - side))
        left = int(rng.integers(0, pixels.shape[1] - side))
        buf = io.BytesIO()
        Image.fromarray(pixels[top : top + side, left : left + side]).save(buf, format="JPEG", quality=85)
        photos.append(buf.getvalue())
    assert len(set(photos)) == count
    return photos


@pytest.fixture
def rate_gateway(tagger_model: ImageModel, tmp_path: Path) -> Iterator[tuple[httpx.Client, Callable[..., str]]]:
    """A dataset service, a real rater (EfficientNet-Lite0 features) and a
    gateway with the default bulk limits; yields a client and ``publish(user,
    bias)``, which publishes a linear head through the rater's own RPC."""
    dataset = create_dataset_server(dataset_settings(tmp_path))
    dataset_addr = f"127.0.0.1:{dataset.start()}"
    rater = create_rater_server(
        RaterSettings(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            device="cpu",
            heads_dir=tmp_path / "heads",
            dataset_addr=dataset_addr,
            shutdown_grace_seconds=1.0,
        ),
        model=tagger_model,
    )
    rater_addr = f"127.0.0.1:{rater.start()}"
    default_files = GatewaySettings.model_fields["max_bulk_files"].default
    assert default_files == 256  # the contract's default, above the chat bot's 200
    settings = gateway_settings(
        dataset_addr, tmp_path, rater_addr=rater_addr, max_bulk_files=default_files, max_upload_bytes=1 << 20
    )
    gateway = GatewayServer(settings).start()
    channel = grpc.insecure_channel(rater_addr)
    stub = rater_pb2_grpc.RaterServiceStub(channel)
    extractor_id = stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=30).extractor_id
    rng = np.random.default_rng(12)

    def publish(user: str, bias: float) -> str:
        weights = serialize_weights({"weight": rng.normal(0, 0.05, DIMENSIONS), "bias": np.array(bias)})
        metadata = rater_pb2.HeadMetadata(user=user, kind="linear", extractor_id=extractor_id, snapshot_id="s")
        reply = stub.PublishHead(rater_pb2.PublishHeadRequest(metadata=metadata, weights=weights), timeout=30)
        return reply.metadata.version

    try:
        with httpx.Client(base_url=gateway.url, timeout=300) as http:
            yield http, publish
    finally:
        gateway.stop()
        channel.close()
        rater.stop(1.0)
        dataset.stop(0)


@pytest.mark.slow
def test_ratebulk_with_200_files_matches_rate_per_image(rate_gateway) -> None:
    http, publish = rate_gateway
    for seed, user in enumerate(("alice", "bob")):
        ok(add_rating(http, make_image("PNG", seed=seed), user, "0.5", "seed.png"))
    publish("alice", 0.2)
    publish("all", -0.1)  # bob's model
    photos = small_photos(BULK_IMAGES)
    files = [("images", (f"photo{i:03d}.jpg", data)) for i, data in enumerate(photos)]

    bulk = ok(http.post("/ratebulk", data={"user": "alice"}, files=files))
    assert bulk["user"] == "alice" and len(bulk["ratings"]) == BULK_IMAGES
    assert len(set(bulk["ratings"])) == BULK_IMAGES  # distinct: the order below means something
    # The original chat bot's form: no user, every user's rating per image.
    table = ok(http.post("/ratebulk", files=files))
    assert table["users"] == ["alice", "bob"] and len(table["ratings"]) == BULK_IMAGES
    assert [row[0] for row in table["ratings"]] == pytest.approx(bulk["ratings"], abs=TOLERANCE)

    for i in SAMPLE:
        single = ok(http.post("/rate", data={"user": "alice"}, files={"image": (f"photo{i:03d}.jpg", photos[i])}))
        assert bulk["ratings"][i] == pytest.approx(single["rating"], abs=TOLERANCE), i
        everyone = ok(http.post("/rate", data={"user": "all"}, files={"image": ("p.jpg", photos[i])}))
        assert table["ratings"][i] == pytest.approx([rating for _, rating in everyone["ratings"]], abs=TOLERANCE), i
