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

Security: with the gateway's access control on (``GATEWAY_AUTH=on``, or
``auto`` on a non-loopback address) every internal gRPC call must carry the
internal secret. When none is configured (``TAGRATE_INTERNAL_TOKEN[_FILE]``)
the supervisor makes a random one for this run and hands it to its children
as a file readable only by this user (``<data dir>/run/internal-token``,
mode 0600, named by ``TAGRATE_INTERNAL_TOKEN_FILE``; the secret itself is in
no process's environment); it is deleted when the group stops. gRPC
reflection and the services' unauthenticated metrics ports are on only for
a loopback-only development run (access control off, every port on
loopback), which the start says. The gateway's admin token
(``GATEWAY_ADMIN_TOKEN[_FILE]``) reaches the gateway only.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError
from pydantic_settings import BaseSettings

from .grpc_server import port_problem
from .replicas import replica_databases, replica_name, replica_port
from .restarts import RestartPolicy, Restarts
from .supervised_children import (
    GATEWAY,
    GATEWAY_ONLY_ENV,
    INTERNAL_TOKEN_FILE,
    LOOPBACK,
    METRICS_OFFSET,
    SERVICES,
    Child,
    StartupError,
    how_ended,
    say,
)
from .supervisor_settings import SupervisorSettings


class Supervisor:
    def __init__(self, settings: SupervisorSettings) -> None:
        self.settings = settings
        self.policy = RestartPolicy.from_settings(settings)
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.internal_token_file: Path | None = None  # the per-run secret this supervisor wrote

    def security_mode(self) -> tuple[bool, bool]:
        """(access control on, loopback-only development run) as the gateway
        will decide it on the group's host."""
        host = self.settings.host.strip("[]").lower()
        gateway = self._child_settings(GATEWAY[1], GATEWAY[2])
        mode = getattr(gateway, "auth", "auto")
        auth_on = mode == "on" or (mode == "auto" and host not in LOOPBACK)
        return auth_on, (not auth_on and host in LOOPBACK)

    def _write_internal_token(self) -> Path:
        """A fresh random secret in a file only this user can read."""
        path = self.settings.data_dir.resolve() / INTERNAL_TOKEN_FILE
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(32))
        self.internal_token_file = path
        return path

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
        auth_on, dev_run = self.security_mode()
        if auth_on and self.settings.internal_token_value() is None and self.internal_token_file is None:
            self._write_internal_token()
        if self.internal_token_file is not None:
            common["TAGRATE_INTERNAL_TOKEN_FILE"] = str(self.internal_token_file)
        common.update(self._replica_databases())
        count = self.settings.replicas
        addrs: dict[str, str] = {}  # env prefix -> address(es) ("" when absent)
        children = []
        for name, module, class_name, offset in SERVICES:
            prefix = name.upper()
            if importlib.util.find_spec(module) is None:
                addrs[prefix] = ""
                continue
            own = self._child_settings(module, class_name)
            first, port_env = self._port(own, "port", offset)
            first_metrics, metrics_env = self._port(own, "metrics_port", offset + METRICS_OFFSET)
            if not dev_run and "metrics_port" not in own.model_fields_set:
                first_metrics = 0  # unauthenticated metrics only on a loopback development run
            ports = [replica_port(first, k) for k in range(count)]
            addrs[prefix] = ",".join(f"{host}:{port}" for port in ports)
            for k, port in enumerate(ports):
                metrics = replica_port(first_metrics, k)
                env = {
                    **common,
                    f"{prefix}_HOST": host,
                    f"{prefix}_PORT": str(port),
                    f"{prefix}_METRICS_PORT": str(metrics),
                    # Development on loopback: grpcurl can list and call every method.
                    f"{prefix}_REFLECTION": "true" if dev_run else "false",
                }
                listens = [(port, port_env)] + ([(metrics, metrics_env)] if metrics else [])
                children.append(Child(replica_name(name, k, count), module, port, env, listens))
        for child in children:
            me = child.name.rstrip("0123456789").upper()
            child.env.update({f"{me}_{peer}_ADDR": addr for peer, addr in addrs.items() if peer != me})
        name, module, class_name, offset = GATEWAY
        gw_port, gw_env = self._port(self._child_settings(module, class_name), "port", offset)
        gateway_env = {**common, "GATEWAY_HOST": host, "GATEWAY_PORT": str(gw_port)}
        gateway_env.update({f"GATEWAY_{peer}_ADDR": addr for peer, addr in addrs.items()})
        children.append(Child(name, module, gw_port, gateway_env, [(gw_port, gw_env)]))
        return children

    def _replica_databases(self) -> dict[str, str]:
        """The environment replicas need (see :mod:`.replicas`), or a
        StartupError saying what to set."""
        if self.settings.replicas == 1:
            return {}
        dataset = self._child_settings("tagrate_dataset", "DatasetSettings")
        trainer = self._child_settings("tagrate_trainer", "TrainerSettings")
        try:
            return replica_databases(
                self.settings.replicas,
                dataset.database_url,  # type: ignore[attr-defined]
                trainer.database_url,  # type: ignore[attr-defined]
                bool(os.environ.get("TRAINER_DATABASE_URL")),
            )
        except ValueError as exc:
            raise StartupError(str(exc)) from None

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
            say(child.name, line)

    def _spawn(self, child: Child) -> None:
        """Starts (or restarts) ``child``; always on the main thread (see
        :mod:`tagrate_common.child`, which makes the child die with the
        supervisor). Its own session: Ctrl-C reaches only the supervisor,
        which stops the children in order."""
        env = {**os.environ, **child.env}
        if child.name != "gateway":
            for name in GATEWAY_ONLY_ENV:
                env.pop(name, None)
        child.proc = subprocess.Popen(
            [sys.executable, "-m", "tagrate_common.child", str(os.getpid()), child.module],
            env=env,
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
                raise StartupError(f"{child.name} exited ({how_ended(child.proc.returncode)}) while starting{said}")
            if self._ready(child, whole_group=True):
                child.state = "up"
                say("run", f"{child.name} is ready on {self.settings.host}:{child.port}")
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
            how = how_ended(child.proc.returncode)
            say("run", f"{child.name} died ({how}); restarting it in {wait:g}s, the rest keep serving")
            if child.restarts.crash_looping and not child.restarts.loop_reported:
                child.restarts.loop_reported = True
                self._report_crash_loop(child, how)
        elif child.state == "backoff" and now >= child.restart_at:
            say("run", f"restarting {child.name} (restart {child.restarts.count})")
            self._spawn(child)
        elif child.state == "starting":
            if self._ready(child, whole_group=False):
                child.state = "up"
                say("run", f"{child.name} is back on {self.settings.host}:{child.port}")
            elif now - child.restarts.started_at > self.settings.start_timeout_seconds:
                say("run", f"{child.name} was not ready {self.settings.start_timeout_seconds:.0f}s after a restart")
                child.proc.kill()  # noticed as a death on the next look

    def _report_crash_loop(self, child: Child, how: str) -> None:
        p = self.policy
        say(
            "run",
            f"CRASH LOOP: {child.name} died {len(child.restarts.exits)} times within {p.loop_window:g}s "
            f"(last: {how}); retrying every {p.maximum:g}s while the rest keep serving. Its last log lines:",
            colour=31,
        )
        for line in self._last_lines(child, 10):
            say("run", f"    {line}", colour=31)

    def _say_security(self) -> None:
        auth_on, dev_run = self.security_mode()
        if dev_run:
            say(
                "run",
                "development run on loopback: access control is off, gRPC reflection and the services' metrics "
                "ports are on, internal calls are not authenticated",
                colour=33,
            )
        elif auth_on:
            source = "a per-run secret (file, mode 0600)" if self.internal_token_file else "TAGRATE_INTERNAL_TOKEN"
            say("run", f"access control is on: internal calls carry {source}; no reflection, no service metrics ports")

    def _remove_internal_token(self) -> None:
        if self.internal_token_file is not None:
            with contextlib.suppress(OSError):
                self.internal_token_file.unlink()
            self.internal_token_file = None

    def stop_all(self) -> None:
        """Gateway first (no new requests), then services in reverse start
        order; a child waiting to be restarted stays down."""
        self.stopping.set()
        for child in reversed(self.children):
            if child.proc is None or child.proc.poll() is not None:
                continue
            say("run", f"stopping {child.name}")
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(self.settings.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                say("run", f"{child.name} did not stop in time; killing it")
                child.proc.kill()
                child.proc.wait()

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        say("run", f"data directory: {self.settings.data_dir.resolve()}")
        try:
            plan = self.plan()
            self.check_ports(plan)
            self._say_security()
            for child in plan:
                if self.stopping.is_set():
                    break
                self._spawn(child)
                self._wait_ready(child)
        except StartupError as exc:
            say("run", f"startup failed: {exc}", colour=31)
            self.stop_all()
            self._remove_internal_token()
            return 1
        if not self.stopping.is_set():
            gateway = self.children[-1]
            url = f"http://{self.settings.host}:{gateway.port}"
            say("run", f"tagrate is running: {url}  (API docs: /docs)")
            if self.settings.replicas > 1:
                ports = ", ".join(f"{child.name} :{child.port}" for child in self.children[:-1])
                say("run", f"{self.settings.replicas} replicas of every service: {ports}")
            cli = Path(sys.executable).parent / "tagrate"
            if cli.is_file():  # the venv make run built (README.md, "First steps")
                say("run", f"import a folder of images: {os.path.relpath(cli)} --url {url} import DIR")
            say("run", "press Ctrl-C to stop")
        # Readiness checks of a restarted child take up to a second or two,
        # so a death elsewhere is noticed within about that.
        while not self.stopping.wait(0.2):
            now = time.monotonic()
            for child in self.children:
                if self.stopping.is_set():
                    break
                self.tend(child, now)
        self.stop_all()
        self._remove_internal_token()
        say("run", "stopped")
        return 0


def main() -> None:
    sys.exit(Supervisor(SupervisorSettings()).run())


if __name__ == "__main__":
    main()
