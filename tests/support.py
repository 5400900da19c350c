"""Starting real tagrate services for tests: free ports, subprocesses,
waiting for gRPC health."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from tagrate_dataset.config import DatasetSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


def dataset_settings(data_dir: Path, database_url: str | None = None, **overrides: object) -> DatasetSettings:
    """Settings for a dataset service in a test: loopback, a free port, no
    metrics, SQLite in ``data_dir`` unless ``database_url`` says otherwise,
    and no model services unless ``overrides`` name them (new images just
    queue)."""
    from tagrate_dataset.config import DatasetSettings

    values: dict[str, object] = dict(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        database_url=database_url or f"sqlite:///{data_dir / 'tagrate.db'}",
        data_dir=data_dir,
        tagger_addr="",
        rater_addr="",
    )
    return DatasetSettings(**{**values, **overrides})


# Under pytest-xdist each worker takes its ports from its own slice of
# 20000-31999, below Linux's ephemeral range (32768-60999): two workers never
# hand out the same port, nor does an outgoing connection take one between
# the pick and the service's bind. A single process asks the kernel.
_WORKER_PORTS = (20000, 32000)
_PORT_HEADROOM = 16  # free_port_block's blocks stay inside the slice
_handed_out: set[int] = set()  # a port given twice before its first bind would clash


def _worker_port_slice() -> range | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return None
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    width = (_WORKER_PORTS[1] - _WORKER_PORTS[0]) // count
    start = _WORKER_PORTS[0] + int(worker[2:]) % count * width
    return range(start, start + width - _PORT_HEADROOM)


def free_port() -> int:
    """A TCP port nobody listens on right now (this worker's own, under xdist)."""
    ports = _worker_port_slice()
    for _ in range(200 if ports else 1):
        with socket.socket() as s:
            if ports is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            port = random.choice(ports) if ports else 0
            if port in _handed_out:
                continue
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            if ports is not None:
                _handed_out.add(port)
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in {ports}")


def health_status(target: str, timeout: float = 1.0) -> str:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as exc:
            return exc.code().name


class ServiceProcess:
    """``python -m <module>`` in its own process, with its log in a file."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path, target: str) -> None:
        self.module, self.env, self.log_path, self.target = module, env, log_path, target
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{self.log()}")
            if health_status(self.target, 0.5) == "SERVING":
                return self
            time.sleep(0.1)
        raise TimeoutError(f"{self.module} not healthy after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
