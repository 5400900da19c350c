"""The tagger and a gateway in front of it (no other backends), as processes
(``python -m ...``, as deployed), with their memory and CPU time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tagrate_common.grpc_client import Backend
from tagrate_common.protos import tagger_pb2_grpc
from tests.support import REPO_ROOT, free_port

from .processes import read_proc_stat, stop_process


class Process:
    """``python -m <module>`` with its own environment and log file."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.module = module
        self.log_path = log_dir / f"{module}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )

    def wait_until(self, ready: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def memory_mib(self) -> tuple[float, float]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in MiB."""
        values = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
        return values.get("VmRSS", float("nan")), values.get("VmHWM", float("nan"))

    def cpu_seconds(self) -> float:
        """User plus system CPU time the process has used so far."""
        return read_proc_stat(self.proc.pid)[1]

    def stop(self) -> None:
        stop_process(self.proc)


def _grpc_serving(target: str) -> bool:
    client = Backend("tagger", target, tagger_pb2_grpc.TaggerServiceStub, 1.0, 1 << 20)
    try:
        return client.health(0.5) == "SERVING"
    finally:
        client.close()


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Stack:
    tagger: Process
    tagger_addr: str
    gateway: Process
    gateway_url: str

    def stop(self) -> None:
        self.gateway.stop()
        self.tagger.stop()


def start_stack(
    batching: bool,
    threads: int,
    log_dir: Path,
    queue_delay_ms: float | None = None,
    cpu_streams: int | None = None,
    backend: str = "auto",
) -> Stack:
    log_dir.mkdir(parents=True, exist_ok=True)
    tagger_port, gateway_port = free_port(), free_port()
    common = {"TAGRATE_LOG_LEVEL": "WARNING", "TAGRATE_DATA_DIR": str(log_dir)}
    tagger = Process(
        "tagrate_tagger",
        {
            **common,
            "TAGGER_HOST": "127.0.0.1",
            "TAGGER_PORT": str(tagger_port),
            "TAGGER_METRICS_PORT": "0",
            "TAGGER_DEVICE": "cpu",
            "TAGGER_BACKEND": backend,
            "TAGGER_TORCH_THREADS": str(threads),
            "TAGGER_BATCHING": "true" if batching else "false",
            **({} if queue_delay_ms is None else {"TAGGER_MAX_QUEUE_DELAY_MS": str(queue_delay_ms)}),
            **({} if cpu_streams is None else {"TAGGER_CPU_STREAMS": str(cpu_streams)}),
        },
        log_dir,
    )
    tagger_addr = f"127.0.0.1:{tagger_port}"
    try:
        tagger.wait_until(lambda: _grpc_serving(tagger_addr))
        gateway = Process(
            "tagrate_gateway",
            {
                **common,
                "GATEWAY_PORT": str(gateway_port),
                "GATEWAY_TAGGER_ADDR": tagger_addr,
                "GATEWAY_DATASET_ADDR": "",
                "GATEWAY_RATER_ADDR": "",
                "GATEWAY_TRAINER_ADDR": "",
            },
            log_dir,
        )
    except BaseException:
        tagger.stop()
        raise
    url = f"http://127.0.0.1:{gateway_port}"
    try:
        gateway.wait_until(lambda: _http_ok(f"{url}/healthz"))
    except BaseException:
        gateway.stop()
        tagger.stop()
        raise
    return Stack(tagger, tagger_addr, gateway, url)
