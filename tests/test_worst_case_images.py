"""The worst images the limits allow, through every path that decodes or
resizes one, with each process's peak memory held to the documented bound.

Tagger, rater, dataset service (with both model services, so its background
worker tags and embeds every new image) and gateway run as separate
processes, so each one's peak RSS (VmHWM) can be read. The bound per process:
its peak after warm-up with an ordinary photo, plus one decode slot per core
times the pixel limit times 8 bytes (a decoded image at 4 bytes a pixel plus
at most one full-size conversion), plus a small allowance for request buffers
and allocator slack. Before crop-before-resize and letterboxing a 50000x1 PNG
alone made the tagger allocate about 20 GB.
"""

from __future__ import annotations

import io
import math
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import skimage.data
from PIL import Image

from tagrate_common.protos import rater_pb2, rater_pb2_grpc
from tagrate_common.vision.rating_heads import serialize_weights
from tests.imagefactory import bomb_png, encode, grey16_png, line_png, rotated_jpeg
from tests.support import REPO_ROOT, ServiceProcess, free_port

pytestmark = pytest.mark.slow

MAX_PIXELS = 4_000_000
MiB = 1 << 20
# What a request may hold besides decoding: gRPC and HTTP buffers for a few
# small uploads, Python objects, malloc arenas of threads seen for the first time.
ALLOWANCE = 96 * MiB
SLOTS = len(os.sched_getaffinity(0))
BOUND = SLOTS * MAX_PIXELS * 8 + ALLOWANCE


def peak_rss(pid: int) -> int:
    """The process's peak resident set (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def largest_image() -> bytes:
    """An RGBA PNG of (nearly) the pixel limit, cheap to send."""
    side = math.isqrt(MAX_PIXELS)
    ramp = np.linspace(0, 255, side, dtype=np.uint8)
    pixels = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1)] * 2, axis=2)
    return encode(Image.fromarray(pixels, "RGBA"))


@dataclass
class Stack:
    processes: dict[str, ServiceProcess]
    url: str
    db: Path

    def peaks(self) -> dict[str, int]:
        return {name: peak_rss(process.proc.pid) for name, process in self.processes.items()}

    def wait_for_background_work(self, images: int, timeout: float = 120) -> None:
        """Until every stored image is tagged and embedded (no work left)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True) as db:
                work = db.execute("SELECT kind, state, error FROM work_items").fetchall()
                stored = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
            assert not [w for w in work if w[1] == "failed"], work
            if not work and stored == images:
                return
            time.sleep(0.2)
        raise AssertionError(f"background work not done: {work}")


def _http_ready(url: str, process: ServiceProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, process.log()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"gateway not ready:\n{process.log()}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data_dir = tmp_path_factory.mktemp("worst-case")
    ports = {name: free_port() for name in ("tagger", "rater", "dataset", "gateway")}
    addr = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    db = data_dir / "tagrate.db"
    common = {"TAGRATE_DATA_DIR": str(data_dir), "TAGRATE_MAX_IMAGE_PIXELS": str(MAX_PIXELS)}
    model = {"HOST": "127.0.0.1", "METRICS_PORT": "0", "DEVICE": "cpu", "SHUTDOWN_GRACE_SECONDS": "1"}
    envs = {
        "tagger": {f"TAGGER_{k}": v for k, v in {**model, "PORT": str(ports["tagger"])}.items()},
        "rater": {
            f"RATER_{k}": v for k, v in {**model, "PORT": str(ports["rater"]), "DATASET_ADDR": addr["dataset"]}.items()
        },
        "dataset": {
            "DATASET_HOST": "127.0.0.1",
            "DATASET_PORT": str(ports["dataset"]),
            "DATASET_METRICS_PORT": "0",
            "DATASET_DATABASE_URL": f"sqlite:///{db}",
            "DATASET_TAGGER_ADDR": addr["tagger"],
            "DATASET_RATER_ADDR": addr["rater"],
            "DATASET_WORK_POLL_SECONDS": "0.2",
        },
    }
    modules = {"tagger": "tagrate_tagger", "rater": "tagrate_rater", "dataset": "tagrate_dataset"}
    processes = {
        name: ServiceProcess(modules[name], {**common, **env}, data_dir / f"{name}.log", addr[name])
        for name, env in envs.items()
    }
    gateway = ServiceProcess(
        "tagrate_gateway",
        {
            **common,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(ports["gateway"]),
            "GATEWAY_DATASET_ADDR": addr["dataset"],
            "GATEWAY_TAGGER_ADDR": addr["tagger"],
            "GATEWAY_RATER_ADDR": addr["rater"],
            "GATEWAY_TRAINER_ADDR": "",
        },
        data_dir / "gateway.log",
        "",
    )
    started: list[ServiceProcess] = []
    try:
        for name in ("dataset", "tagger", "rater"):
            started.append(processes[name].start(timeout=120))
        _start_http(gateway)
        started.append(gateway)
        _http_ready(f"http://{addr['gateway']}", gateway)
        _publish_global_head(addr["rater"])
        yield Stack({**processes, "gateway": gateway}, f"http://{addr['gateway']}", db)
    finally:
        for process in reversed(started):
            try:
                process.terminate(30)
            except Exception:  # stop the rest whatever happens
                process.kill()


def _start_http(process: ServiceProcess) -> None:
    """ServiceProcess.start waits for gRPC health; the gateway speaks HTTP."""
    import subprocess
    import sys

    log = open(process.log_path, "ab")  # noqa: SIM115 - owned by the child
    process.proc = subprocess.Popen(
        [sys.executable, "-m", process.module],
        env={**os.environ, **process.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO_ROOT,
    )


def _publish_global_head(rater_addr: str) -> None:
    """A global rating head, so /rate answers for every user."""
    with grpc.insecure_channel(rater_addr) as channel:
        stub = rater_pb2_grpc.RaterServiceStub(channel)
        extractor = stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest(), timeout=30).extractor_id
        weights = serialize_weights({"weight": np.zeros(1280), "bias": np.array(0.0)})
        metadata = rater_pb2.HeadMetadata(user="all", kind="linear", extractor_id=extractor, snapshot_id="s")
        stub.PublishHead(rater_pb2.PublishHeadRequest(metadata=metadata, weights=weights), timeout=30)


def _photo() -> bytes:
    return encode(Image.fromarray(skimage.data.coffee()), "JPEG", quality=90)


def _every_path(http: httpx.Client, data: bytes, filename: str, user: str) -> str:
    """/addrating (which creates the user), /tag and /rate with one image;
    /getimage?size=64 of the stored copy. Returns the stored name."""
    added = http.post("/addrating", data={"user": user, "rating": "0.5"}, files={"image": (filename, data)})
    assert added.status_code == 200, (filename, added.text)
    tagged = http.post("/tag", files={"image": (filename, data)})
    assert tagged.status_code == 200, (filename, tagged.text)
    rated = http.post("/rate", data={"user": user}, files={"image": (filename, data)})
    assert rated.status_code == 200, (filename, rated.text)
    name = added.json()["image"]
    small = http.get("/getimage", params={"image": name, "size": 64})
    assert small.status_code == 200, (filename, small.text)
    return name


def test_worst_case_images_stay_within_the_memory_bound(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=120) as http:
        _every_path(http, _photo(), "photo.jpg", "warmup")
        stack.wait_for_background_work(1)
        baseline = stack.peaks()

        worst = {
            "wide.png": line_png(50_000, 1),
            "tall.png": line_png(1, 50_000),
            "thin.png": line_png(1, 3000),
            "stripe.png": line_png(20_000, 2),
            "largest.png": largest_image(),
            "grey16.png": grey16_png((1600, 1200), 40_000),
            "rotated.jpg": rotated_jpeg(Image.fromarray(skimage.data.astronaut()).resize((300, 500)), 6),
        }
        names = {filename: _every_path(http, data, filename, "worst") for filename, data in worst.items()}
        for path, form in [("/tag", {}), ("/rate", {"user": "worst"}), ("/addrating", {"user": "w", "rating": "1"})]:
            refused = http.post(path, data=form, files={"image": ("bomb.png", bomb_png())})
            assert refused.status_code == 413, refused.text
            assert refused.json()["code"] == "too_many_pixels", refused.text
        stack.wait_for_background_work(1 + len(worst))

        # What came back is right, not just cheap.
        for filename, size in [("wide.png", (64, 1)), ("tall.png", (1, 64)), ("rotated.jpg", (38, 64))]:
            small = Image.open(io.BytesIO(http.get("/getimage", params={"image": names[filename], "size": 64}).content))
            assert small.size == size, filename
        grey = http.get("/getimage", params={"image": names["grey16.png"], "size": 64}).content
        grey_pixels = np.asarray(Image.open(io.BytesIO(grey)).convert("L"), np.float64)
        assert abs(grey_pixels.mean() - 40_000 / 257) < 2  # not clipped to white

    peaks = stack.peaks()
    report = {name: (baseline[name] // MiB, peaks[name] // MiB) for name in peaks}
    print(f"peak RSS MiB (after warm-up, after worst cases), bound +{BOUND // MiB}: {report}")
    for name, peak in peaks.items():
        assert peak - baseline[name] <= BOUND, (name, report, BOUND // MiB)
