"""``python -m tagrate_gateway`` as its own process: environment settings,
the access log, and a clean exit on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.support import REPO_ROOT, free_port


def test_runs_from_the_environment_and_stops_on_sigterm(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_PORT": str(port),
        "GATEWAY_DATASET_ADDR": f"127.0.0.1:{free_port()}",
        "GATEWAY_TAGGER_ADDR": "",
        "GATEWAY_RATER_ADDR": "",
        "GATEWAY_TRAINER_ADDR": "",
        "TAGRATE_LOG_FORMAT": "json",
        "TAGRATE_DATA_DIR": str(tmp_path),
    }
    log_path = tmp_path / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log_path.read_text()
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        assert health.status_code == 200
        # A failing /readyz is logged at INFO (a passing one, like /healthz, at DEBUG).
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", headers={"X-Request-ID": "smoke-1"})
        assert ready.status_code == 503 and ready.json()["services"]["dataset"] == "UNAVAILABLE"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    log = log_path.read_text()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert code in (0, -signal.SIGTERM), log
    assert "Application shutdown complete" in log
    assert '"request_id": "smoke-1"' in log and '"msg": "GET /readyz 503"' in log and '"ms":' in log
    assert "GET /healthz" not in log
