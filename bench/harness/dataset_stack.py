"""The dataset service and a gateway in front of it (no other backends), as
processes: what the benchmarks on the bench dataset measure through."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support import REPO_ROOT, ServiceProcess, free_port

from .processes import stop_process

# -- the services ----------------------------------------------------------------


@dataclass
class Stack:
    """The dataset service and the gateway in front of it, as processes."""

    dataset: ServiceProcess
    dataset_addr: str
    gateway: subprocess.Popen
    gateway_url: str
    gateway_log: Path

    def stop(self) -> None:
        stop_process(self.gateway)
        if self.dataset.proc is not None and self.dataset.proc.poll() is None:
            self.dataset.terminate()


def start_stack(
    database_url: str,
    work_dir: Path,
    dataset_settings: dict[str, str] | None = None,
    gateway_settings: dict[str, str] | None = None,
) -> Stack:
    """Starts the dataset service on ``database_url`` and a gateway that
    routes to it (no other backends), each with these extra environment
    settings; returns once both answer."""
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    dataset_port = free_port()
    addr = f"127.0.0.1:{dataset_port}"
    dataset_env = {
        "DATASET_HOST": "127.0.0.1",
        "DATASET_PORT": str(dataset_port),
        "DATASET_METRICS_PORT": "0",
        "DATABASE_URL": database_url,
        "TAGRATE_DATA_DIR": str(data_dir),
        **(dataset_settings or {}),
    }
    dataset = ServiceProcess("tagrate_dataset", dataset_env, work_dir / "dataset.log", addr).start(timeout=120)

    gateway_port = free_port()
    gateway_env = {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_DATASET_ADDR": addr,
        "GATEWAY_TAGGER_ADDR": "",
        "GATEWAY_RATER_ADDR": "",
        "GATEWAY_TRAINER_ADDR": "",
        "TAGRATE_DATA_DIR": str(data_dir),
        **(gateway_settings or {}),
    }
    log_path = work_dir / "gateway.log"
    with open(log_path, "ab") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"],
            env={**os.environ, **gateway_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    stack = Stack(dataset, addr, gateway, f"http://127.0.0.1:{gateway_port}", log_path)
    try:
        _wait_for_http(stack, f"{stack.gateway_url}/healthz")
        _wait_for_own_backlog(stack)
    except BaseException:
        stack.stop()
        raise
    return stack


# Work the dataset service does itself (no model service needed): at the first
# start over a library stored before hashes were made, every image is queued.
_OWN_WORK = ("hash",)


def _wait_for_own_backlog(stack: Stack, timeout: float = 600.0, sweep_seconds: float = 30.0) -> None:
    """Returns once the dataset service owes none of its own background work.
    The bench library's rows have no image files, so each image's hash work
    fails at once; but 100,000 of them keep a core busy for about a minute
    after the start, which a measurement taken meanwhile reads as request
    cost (the before/after comparison of issue 24 measured exactly that).

    The service queues that work from its background thread a moment after
    it answers, so "nothing pending" right after the start proves nothing:
    first wait (up to ``sweep_seconds``) until the queue shows the sweep
    (items pending or parked as failed), then until none is pending."""
    deadline, said = time.monotonic() + timeout, False
    swept_by = time.monotonic() + sweep_seconds
    while True:
        work = httpx.get(f"{stack.gateway_url}/verifydatasets", timeout=60.0).json().get("work", {})
        owed = sum(work.get(kind, {}).get("pending", 0) for kind in _OWN_WORK)
        seen = owed + sum(work.get(kind, {}).get("failed", 0) for kind in _OWN_WORK)
        if not seen and time.monotonic() < swept_by:
            time.sleep(0.5)
            continue
        if not owed:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dataset service still owes {owed} images of {'/'.join(_OWN_WORK)} work")
        if not said:
            print(f"  waiting for the dataset service's own background work ({owed} images)", flush=True)
            said = True
        time.sleep(1.0)


def _wait_for_http(stack: Stack, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with {stack.gateway.returncode}:\n{_tail(stack.gateway_log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the gateway did not answer within {timeout}s:\n{_tail(stack.gateway_log)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]
