"""``make run``: every tagrate service plus the gateway as one supervised group.

Starts each service that exists in this checkout (in dependency order), waits
for its gRPC health check, then starts the gateway pointed at them and waits
for ``/readyz``. Every line a child prints is prefixed with its name. Ctrl-C
or SIGTERM stops the gateway first, then the services, each given its grace
period; if any child dies on its own, the rest are stopped and the exit code
says so. All data lives under ``TAGRATE_DATA_DIR`` (default ``./data``).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from .config import DEFAULT_PORTS, CommonSettings


class SupervisorSettings(CommonSettings):
    """Where the group listens; each child still reads its own settings."""

    model_config = SettingsConfigDict(env_prefix="TAGRATE_RUN_")

    host: str = Field("127.0.0.1", description="Address every service and the gateway bind.")
    start_timeout_seconds: float = Field(300.0, gt=0, description="How long one child may take to become ready.")
    stop_timeout_seconds: float = Field(20.0, gt=0, description="How long one child may take to stop after SIGTERM.")


@dataclass
class Child:
    name: str
    module: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None


# name, module, environment-variable prefix; in start order (dependencies first).
SERVICES = [
    ("tagger", "tagrate_tagger", "TAGGER"),
    ("rater", "tagrate_rater", "RATER"),
    ("dataset", "tagrate_dataset", "DATASET"),
    ("trainer", "tagrate_trainer", "TRAINER"),
]
_COLOURS = {"gateway": 36, "dataset": 32, "tagger": 35, "rater": 33, "trainer": 34, "run": 1}


def _say(name: str, line: str) -> None:
    prefix = f"{name:>7} |"
    if sys.stdout.isatty():
        prefix = f"\033[{_COLOURS.get(name, 0)}m{prefix}\033[0m"
    sys.stdout.write(f"{prefix} {line}\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """Runs in the child: SIGTERM it if the supervisor itself is killed."""
    os.setsid()  # Ctrl-C reaches only the supervisor, which stops children in order
    with contextlib.suppress(OSError):  # not Linux/glibc: children just outlive a killed supervisor
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def plan(self) -> list[Child]:
        """The services present in this checkout, then the gateway wired to them.

        Peers find each other through ``<SELF>_<PEER>_ADDR`` (e.g.
        ``DATASET_TAGGER_ADDR``); a peer missing from this checkout gets "",
        which the services and the gateway treat as "not configured".
        """
        host = self.settings.host
        common = {"TAGRATE_DATA_DIR": str(self.settings.data_dir.resolve()), "PYTHONUNBUFFERED": "1"}
        addrs: dict[str, str] = {}  # env prefix -> address ("" when absent)
        children = []
        for name, module, prefix in SERVICES:
            if importlib.util.find_spec(module) is None:
                addrs[prefix] = ""
                continue
            port = int(os.environ.get(f"{prefix}_PORT", DEFAULT_PORTS[name]))
            addrs[prefix] = f"{host}:{port}"
            children.append(Child(name, module, port, {**common, f"{prefix}_HOST": host, f"{prefix}_PORT": str(port)}))
        for child in children:
            me = child.name.upper()
            child.env.update({f"{me}_{peer}_ADDR": addr for peer, addr in addrs.items() if peer != me})
        gw_port = int(os.environ.get("GATEWAY_PORT", DEFAULT_PORTS["gateway"]))
        gateway_env = {**common, "GATEWAY_HOST": host, "GATEWAY_PORT": str(gw_port)}
        gateway_env.update({f"GATEWAY_{peer}_ADDR": addr for peer, addr in addrs.items()})
        children.append(Child("gateway", "tagrate_gateway", gw_port, gateway_env))
        return children

    def _pump(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        for raw in child.proc.stdout:
            _say(child.name, raw.decode(errors="replace").rstrip())

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            [sys.executable, "-m", child.module],
            env={**os.environ, **child.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        threading.Thread(target=self._pump, args=(child,), daemon=True).start()
        self.children.append(child)

    def _ready(self, child: Child) -> bool:
        if child.name == "gateway":
            try:
                with urllib.request.urlopen(f"http://{self.settings.host}:{child.port}/readyz", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        with grpc.insecure_channel(f"{self.settings.host}:{child.port}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return reply.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.RpcError:
                return False

    def _wait_ready(self, child: Child) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        while not self.stopping.is_set():
            if child.proc is not None and child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode} while starting")
            if self._ready(child):
                _say("run", f"{child.name} is ready on {self.settings.host}:{child.port}")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} was not ready after {self.settings.start_timeout_seconds:.0f}s")
            time.sleep(0.2)

    def stop_all(self) -> None:
        """Gateway first (no new requests), then services in reverse start order."""
        self.stopping.set()
        for child in reversed(self.children):
            if child.proc is None or child.proc.poll() is not None:
                continue
            _say("run", f"stopping {child.name}")
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(self.settings.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                _say("run", f"{child.name} did not stop in time; killing it")
                child.proc.kill()
                child.proc.wait()

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        _say("run", f"data directory: {self.settings.data_dir.resolve()}")
        try:
            for child in self.plan():
                if self.stopping.is_set():
                    break
                self._spawn(child)
                self._wait_ready(child)
        except RuntimeError as exc:
            _say("run", f"startup failed: {exc}")
            self.stop_all()
            return 1
        if not self.stopping.is_set():
            gateway = self.children[-1]
            _say("run", f"tagrate is running: http://{self.settings.host}:{gateway.port}  (API docs: /docs)")
            _say("run", "press Ctrl-C to stop")
        code = 0
        while not self.stopping.wait(0.5):
            dead = [c for c in self.children if c.proc is not None and c.proc.poll() is not None]
            if dead:
                _say("run", f"{dead[0].name} exited unexpectedly (code {dead[0].proc.returncode}); stopping the rest")
                code = 1
                break
        self.stop_all()
        _say("run", "stopped")
        return code


def main() -> None:
    sys.exit(Supervisor(SupervisorSettings()).run())


if __name__ == "__main__":
    main()
