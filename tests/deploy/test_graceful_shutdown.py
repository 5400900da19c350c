"""What Kubernetes relies on when it stops a pod: the dataset service, run as
its container runs it (``python -m tagrate_dataset``), gets SIGTERM while
calls are in flight; health turns NOT_SERVING at once, every call that had
started completes and is stored, and the process exits within its grace
period. Also the health check CLI the images use."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.protos import common_pb2, ratings_pb2
from tests.support import REPO_ROOT, ServiceProcess, free_port, health_status

NOTICE_SECONDS = 2.0
GRACE_SECONDS = 15.0
CALLERS = 6


def large_bmps(count: int, side: int = 1400) -> list[bytes]:
    """Distinct uncompressed images of a few MB each: slow enough to decode,
    hash and fsync that several calls are always in flight, cheap to make."""
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    images = []
    for i in range(count):
        pixels[0, 0] = (i % 256, i // 256, 0)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="BMP")
        images.append(buf.getvalue())
    return images


@dataclass
class Call:
    user: str
    started: float
    ended: float = 0.0
    code: grpc.StatusCode | None = None
    image: str = ""


@dataclass
class Load:
    """Callers that keep AddRating calls going until the server refuses them."""

    target: str
    images: list[bytes]
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def caller(self, index: int) -> None:
        options = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
        with grpc.insecure_channel(self.target, options=options) as channel:
            stub = DatasetStubs(channel)
            n = 0
            while not self.stop.is_set():
                data = self.images[(index * 97 + n) % len(self.images)]
                call = Call(user=f"user{index}_{n}", started=time.monotonic())
                n += 1
                request = ratings_pb2.AddRatingRequest(
                    user=call.user, rating=0.5, image=common_pb2.ImageFile(data=data, filename="big.bmp")
                )
                try:
                    call.image = stub.ratings.AddRating(request, timeout=60).image
                    call.code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    call.code = exc.code()
                call.ended = time.monotonic()
                with self.lock:
                    self.calls.append(call)
                if call.code != grpc.StatusCode.OK:
                    return  # the server is going away


def stored_ratings(database: Path) -> set[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT users.name FROM ratings JOIN users ON users.id = ratings.user_id").fetchall()
    return {name for (name,) in rows}


def test_sigterm_under_load_drains_in_flight_calls_and_exits(tmp_path: Path) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    database = tmp_path / "tagrate.db"
    env = {
        "TAGRATE_DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": f"sqlite:///{database}",
        "DATASET_HOST": "127.0.0.1",
        "DATASET_PORT": str(port),
        "DATASET_METRICS_PORT": "0",
        "DATASET_TAGGER_ADDR": "",
        "DATASET_RATER_ADDR": "",
        "DATASET_SHUTDOWN_NOTICE_SECONDS": str(NOTICE_SECONDS),
        "DATASET_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
    }
    service = ServiceProcess("tagrate_dataset", env, tmp_path / "dataset.log", target).start()
    load = Load(target, large_bmps(12))
    threads = [threading.Thread(target=load.caller, args=(i,), daemon=True) for i in range(CALLERS)]
    try:
        for thread in threads:
            thread.start()
        # Wait until the load is real: some calls have completed, so the
        # callers are past their first connection and busy.
        deadline = time.monotonic() + 60
        while len(load.calls) < CALLERS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(load.calls) >= CALLERS, service.log()

        assert service.proc is not None
        sigterm_at = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        statuses = []
        while service.proc.poll() is None and "NOT_SERVING" not in statuses:
            statuses.append(health_status(target, timeout=1.0))
        assert "NOT_SERVING" in statuses, f"health never reported NOT_SERVING: {statuses}\n{service.log()}"

        code = service.proc.wait(timeout=NOTICE_SECONDS + GRACE_SECONDS + 5)
    finally:
        load.stop.set()
        if service.proc is not None and service.proc.poll() is None:
            service.kill()
    for thread in threads:
        thread.join(30)
    assert code == 0, service.log()

    in_flight = [c for c in load.calls if c.started < sigterm_at < c.ended]
    assert in_flight, "no call was in flight at SIGTERM; the test proved nothing"
    started_before = [c for c in load.calls if c.started < sigterm_at]
    failed = [(c.user, c.code) for c in started_before if c.code != grpc.StatusCode.OK]
    assert not failed, f"calls in flight at SIGTERM failed: {failed}\n{service.log()}"
    # The only refusals are of calls made after SIGTERM, once the notice
    # period was over: UNAVAILABLE when the server no longer accepted them,
    # CANCELLED when one's upload was still arriving as the drain began (a
    # caller that honoured NOT_SERVING would not have sent either).
    refused = [c for c in load.calls if c.code != grpc.StatusCode.OK]
    assert all(c.started > sigterm_at for c in refused)
    assert {c.code for c in refused} <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
    # Every answered call is durably stored, in-flight ones included.
    answered = {c.user for c in load.calls if c.code == grpc.StatusCode.OK}
    assert stored_ratings(database) == answered
    blobs = Path(env["TAGRATE_DATA_DIR"]) / "dataset" / "blobs"
    for call in load.calls:
        if call.code == grpc.StatusCode.OK:
            assert (blobs / call.image[:2] / call.image).is_file(), call.image


# ---- the health check CLI --------------------------------------------------------------


def healthcheck(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tagrate_common.healthcheck", target, "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )


@pytest.fixture
def dataset_service(tmp_path: Path):
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = {
        "TAGRATE_DATA_DIR": str(tmp_path / "data"),
        "DATASET_HOST": "127.0.0.1",
        "DATASET_PORT": str(port),
        "DATASET_METRICS_PORT": "0",
        "DATASET_TAGGER_ADDR": "",
        "DATASET_RATER_ADDR": "",
        "DATASET_SHUTDOWN_NOTICE_SECONDS": "3",
        "DATASET_SHUTDOWN_GRACE_SECONDS": "1",
    }
    service = ServiceProcess("tagrate_dataset", env, tmp_path / "dataset.log", target).start()
    yield service
    if service.proc is not None and service.proc.poll() is None:
        service.kill()


def test_healthcheck_cli_exits_0_only_while_serving(dataset_service: ServiceProcess) -> None:
    target = dataset_service.target
    serving = healthcheck(target)
    assert serving.returncode == 0 and "SERVING" in serving.stdout
    assert dataset_service.proc is not None
    dataset_service.proc.send_signal(signal.SIGTERM)
    while health_status(target) == "SERVING":
        time.sleep(0.05)
    draining = healthcheck(target)  # still answering during the notice period
    assert draining.returncode == 1 and "NOT_SERVING" in draining.stdout
    dataset_service.proc.wait(30)
    gone = healthcheck(target)
    assert gone.returncode == 1 and "UNAVAILABLE" in gone.stdout


def test_healthcheck_cli_over_http_against_the_gateway(tmp_path: Path) -> None:
    """The gateway image checks /healthz over HTTP. A gateway whose dataset
    backend is down is alive (/healthz 200) but not ready (/readyz 503)."""
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        **{f"GATEWAY_{name}_ADDR": "" for name in ("TAGGER", "RATER", "TRAINER")},
        "GATEWAY_DATASET_ADDR": f"127.0.0.1:{free_port()}",  # nothing listens there
    }
    base = f"http://127.0.0.1:{port}"
    with open(tmp_path / "gateway.log", "wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
    try:
        deadline = time.monotonic() + 60
        while healthcheck(f"{base}/healthz").returncode != 0:
            assert gateway.poll() is None and time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
            time.sleep(0.1)
        not_ready = healthcheck(f"{base}/readyz")
        assert not_ready.returncode == 1 and "HTTP 503" in not_ready.stdout
    finally:
        gateway.send_signal(signal.SIGTERM)
        gateway.wait(30)
    assert healthcheck(f"{base}/healthz").returncode == 1
