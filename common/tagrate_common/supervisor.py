"""``make run``: every tagrate service plus the gateway as one supervised group.

Starts each service that exists in this checkout (in dependency order), waits
for its gRPC health check, then starts the gateway pointed at them and waits
for ``/readyz``. Every line a child prints is prefixed with its name. All data
lives under ``TAGRATE_DATA_DIR`` (default ``./data``).

Before anything starts, every port the group needs is tried: one in use is an
error naming the port and the setting that moves it, so a second copy of the
group can never answer for (or write into) the first. ``TAGRATE_RUN_BASE_PORT``
moves the whole group at once (gateway B, services B+1..B+4, their metrics
B+5..B+8); a service's own ``*_PORT`` / ``*_METRICS_PORT`` still win.

A child that fails while the group starts stops the group with a clear error.
Once the group is up, a child that dies is restarted with exponential backoff
while the rest keep serving (the gateway answers 503 naming the missing
service meanwhile); one that keeps dying is reported loudly, with its last log
lines, and retried at the longest backoff for as long as the group runs.
Ctrl-C or SIGTERM stops the gateway first, then the services in reverse start
order, each given its grace period, whatever state they are in.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from .grpc_server import port_problem
from .restarts import RestartPolicy, Restarts
from .supervisor_settings import SupervisorSettings


@dataclass
class Child:
    name: str
    module: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    # (port, the setting that moves it) for every port the child listens on.
    listens: list[tuple[int, str]] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    pump: threading.Thread | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=15))
    restarts: Restarts | None = None
    state: str = "new"  # new -> starting -> up -> backoff -> starting -> ...
    restart_at: float = 0.0


# name, module, settings class, port offset from TAGRATE_RUN_BASE_PORT; in
# start order (dependencies first). A service's metrics port is its port + 4.
SERVICES = [
    ("tagger", "tagrate_tagger", "TaggerSettings", 1),
    ("rater", "tagrate_rater", "RaterSettings", 2),
    ("dataset", "tagrate_dataset", "DatasetSettings", 3),
    ("trainer", "tagrate_trainer", "TrainerSettings", 4),
]
GATEWAY = ("gateway", "tagrate_gateway", "GatewaySettings", 0)
METRICS_OFFSET = 4
_COLOURS = {"gateway": 36, "dataset": 32, "tagger": 35, "rater": 33, "trainer": 34, "run": 1}


class StartupError(RuntimeError):
    """The group cannot start; the message says why and what to change."""


def _say(name: str, line: str, colour: int | None = None) -> None:
    prefix = f"{name:>7} |"
    if sys.stdout.isatty():
        prefix = f"\033[{_COLOURS.get(name, 0)}m{prefix}\033[0m"
        if colour is not None:
            line = f"\033[{colour}m{line}\033[0m"
    sys.stdout.write(f"{prefix} {line}\n")
    sys.stdout.flush()


def _how(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


class Supervisor:
    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self.policy = RestartPolicy.from_settings(settings)
        self.children: list[Child] = []
        self.stopping = threading.Event()

    def _child_settings(self, module: str, class_name: str) -> BaseSettings:
        """The child's own settings, read as the child will read them, so its
        ports have one home (its ``config.py``)."""
        cls = getattr(importlib.import_module(f"{module}.config"), class_name)
        try:
            return cls()
        except ValidationError as exc:
            prefix = cls.model_config.get("env_prefix", "")
            problems = "; ".join(
                f"{prefix}{'_'.join(map(str, e['loc']))}".upper() + f" = {e['input']!r}: {e['msg']}"
                for e in exc.errors()
            )
            raise StartupError(f"invalid {module} settings: {problems}") from None

    def _port(self, child_settings: BaseSettings, name: str, offset: int) -> tuple[int, str]:
        """A port and the environment variable that sets it: the child's own
        setting when given, else the base port plus ``offset``, else the
        child's default."""
        env = f"{type(child_settings).model_config.get('env_prefix', '')}{name}".upper()
        base = self.settings.base_port
        if base is None or name in child_settings.model_fields_set:
            return getattr(child_settings, name), env
        return base + offset, env

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
        for name, module, class_name, offset in SERVICES:
            prefix = name.upper()
            if importlib.util.find_spec(module) is None:
                addrs[prefix] = ""
                continue
            own = self._child_settings(module, class_name)
            port, port_env = self._port(own, "port", offset)
            metrics, metrics_env = self._port(own, "metrics_port", offset + METRICS_OFFSET)
            addrs[prefix] = f"{host}:{port}"
            env = {
                **common,
                f"{prefix}_HOST": host,
                f"{prefix}_PORT": str(port),
                f"{prefix}_METRICS_PORT": str(metrics),
                # Development on loopback: grpcurl can list and call every method.
                f"{prefix}_REFLECTION": "true",
            }
            listens = [(port, port_env)] + ([(metrics, metrics_env)] if metrics else [])
            children.append(Child(name, module, port, env, listens))
        for child in children:
            me = child.name.upper()
            child.env.update({f"{me}_{peer}_ADDR": addr for peer, addr in addrs.items() if peer != me})
        name, module, class_name, offset = GATEWAY
        gw_port, gw_env = self._port(self._child_settings(module, class_name), "port", offset)
        gateway_env = {**common, "GATEWAY_HOST": host, "GATEWAY_PORT": str(gw_port)}
        gateway_env.update({f"GATEWAY_{peer}_ADDR": addr for peer, addr in addrs.items()})
        children.append(Child(name, module, gw_port, gateway_env, [(gw_port, gw_env)]))
        return children

    def check_ports(self, children: list[Child]) -> None:
        """Every port the group needs is distinct and free, or a
        :class:`StartupError` names the first one that is not."""
        seen: dict[int, str] = {}
        for child in children:
            for port, env in child.listens:
                if port in seen:
                    raise StartupError(f"port {port} is set for both {seen[port]} and {env}; give one another port")
                seen[port] = env
                problem = port_problem(self.settings.host, port)
                if problem:
                    raise StartupError(
                        f"cannot listen on {self.settings.host}:{port}: {problem} (set {env} or TAGRATE_RUN_BASE_PORT)"
                    )

    def _pump(self, child: Child, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            child.recent.append(line)
            _say(child.name, line)

    def _spawn(self, child: Child) -> None:
        """Starts (or restarts) ``child``; always on the main thread (see
        :mod:`tagrate_common.child`, which makes the child die with the
        supervisor). Its own session: Ctrl-C reaches only the supervisor,
        which stops the children in order."""
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "tagrate_common.child", str(os.getpid()), child.module],
            env={**os.environ, **child.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.pump = threading.Thread(target=self._pump, args=(child, child.proc), daemon=True)
        child.pump.start()
        if child.restarts is None:
            child.restarts = Restarts(self.policy)
            self.children.append(child)
        child.restarts.started(time.monotonic())
        child.state = "starting"

    def _last_lines(self, child: Child, count: int) -> list[str]:
        if child.pump is not None:
            child.pump.join(2.0)  # the pipe may still hold the child's dying words
        return list(child.recent)[-count:]

    def _ready(self, child: Child, *, whole_group: bool) -> bool:
        """Whether ``child`` answers. The gateway's ``/readyz`` also checks
        every backend, which only makes sense while the group starts; after
        a restart its ``/healthz`` says it serves (and names what is down)."""
        if child.name == "gateway":
            path = "/readyz" if whole_group else "/healthz"
            try:
                with urllib.request.urlopen(f"http://{self.settings.host}:{child.port}{path}", timeout=2) as r:
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
                last = self._last_lines(child, 1)
                said = f": {last[0]}" if last else ""
                raise StartupError(f"{child.name} exited ({_how(child.proc.returncode)}) while starting{said}")
            if self._ready(child, whole_group=True):
                child.state = "up"
                _say("run", f"{child.name} is ready on {self.settings.host}:{child.port}")
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{child.name} was not ready after {self.settings.start_timeout_seconds:.0f}s")
            time.sleep(0.2)

    def tend(self, child: Child, now: float) -> None:
        """One look at a child of the running group: notice a death and
        schedule the restart, restart when the wait is over, and say when a
        restarted child serves again."""
        assert child.proc is not None and child.restarts is not None
        if child.state in ("up", "starting") and child.proc.poll() is not None:
            wait = child.restarts.exited(now)
            child.state, child.restart_at = "backoff", now + wait
            how = _how(child.proc.returncode)
            _say("run", f"{child.name} died ({how}); restarting it in {wait:g}s, the rest keep serving")
            if child.restarts.crash_looping and not child.restarts.loop_reported:
                child.restarts.loop_reported = True
                self._report_crash_loop(child, how)
        elif child.state == "backoff" and now >= child.restart_at:
            _say("run", f"restarting {child.name} (restart {child.restarts.count})")
            self._spawn(child)
        elif child.state == "starting":
            if self._ready(child, whole_group=False):
                child.state = "up"
                _say("run", f"{child.name} is back on {self.settings.host}:{child.port}")
            elif now - child.restarts.started_at > self.settings.start_timeout_seconds:
                _say("run", f"{child.name} was not ready {self.settings.start_timeout_seconds:.0f}s after a restart")
                child.proc.kill()  # noticed as a death on the next look

    def _report_crash_loop(self, child: Child, how: str) -> None:
        p = self.policy
        _say(
            "run",
            f"CRASH LOOP: {child.name} died {len(child.restarts.exits)} times within {p.loop_window:g}s "
            f"(last: {how}); retrying every {p.maximum:g}s while the rest keep serving. Its last log lines:",
            colour=31,
        )
        for line in self._last_lines(child, 10):
            _say("run", f"    {line}", colour=31)

    def stop_all(self) -> None:
        """Gateway first (no new requests), then services in reverse start
        order; a child waiting to be restarted stays down."""
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
            plan = self.plan()
            self.check_ports(plan)
            for child in plan:
                if self.stopping.is_set():
                    break
                self._spawn(child)
                self._wait_ready(child)
        except StartupError as exc:
            _say("run", f"startup failed: {exc}", colour=31)
            self.stop_all()
            return 1
        if not self.stopping.is_set():
            gateway = self.children[-1]
            _say("run", f"tagrate is running: http://{self.settings.host}:{gateway.port}  (API docs: /docs)")
            _say("run", "press Ctrl-C to stop")
        # Readiness checks of a restarted child take up to a second or two,
        # so a death elsewhere is noticed within about that.
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if self.stopping.is_set():
                    break
                self.tend(child, now)
        self.stop_all()
        _say("run", "stopped")
        return 0


def main() -> None:
    sys.exit(Supervisor(SupervisorSettings()).run())


if __name__ == "__main__":
    main()
