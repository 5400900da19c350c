"""``make run`` as a test drives it: the real supervisor
(``python -m tagrate_common.supervisor``) on a free block of ports with its
own data directory, its output in a file, and its children found by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tagrate_common.grpc_server import port_problem
from tests.support import REPO_ROOT, free_port

# Offsets from TAGRATE_RUN_BASE_PORT (the supervisor's documented layout).
PORT_OFFSETS = {"gateway": 0, "tagger": 1, "rater": 2, "dataset": 3, "trainer": 4}
CHILDREN = tuple(PORT_OFFSETS)


def free_port_block(size: int = 9) -> int:
    """A base port whose next ``size`` ports are all free right now."""
    for _ in range(100):
        base = free_port()
        if base + size < 65536 and not any(port_problem("127.0.0.1", base + i) for i in range(size)):
            return base
    raise RuntimeError("no block of free ports found")


def bind_listener(port: int = 0) -> socket.socket:
    """A plain socket listening on ``port`` (0: a free one), as a squatter would."""
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def listening_socket(port: int = 0) -> Iterator[int]:
    """:func:`bind_listener` for the block; yields the port."""
    with bind_listener(port) as sock:
        yield sock.getsockname()[1]


def _environ() -> dict[str, str]:
    """This process's environment without any port or address settings a
    developer may have exported, which would pull a test stack onto them."""
    prefixes = (*tuple(f"{name.upper()}_" for name in CHILDREN), "TAGRATE_RUN_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


class RunStack:
    """One supervised group. ``env`` adds settings (e.g. restart policy)."""

    def __init__(self, data_dir: Path, log_path: Path, base_port: int, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.log_path, self.base_port = data_dir, log_path, base_port
        self.env = {
            "TAGRATE_RUN_BASE_PORT": str(base_port),
            "TAGRATE_DATA_DIR": str(data_dir),
            **(env or {}),
        }
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.base_port}"

    def port(self, child: str) -> int:
        return self.base_port + PORT_OFFSETS[child]

    def start(self) -> RunStack:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tagrate_common.supervisor"],
            env={**_environ(), **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
        return self

    def wait_running(self, timeout: float = 180.0) -> RunStack:
        """Until the supervisor says the whole group is up."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"make run exited with {self.proc.returncode}:\n{self.log()[-5000:]}")
            if "tagrate is running" in self.log():
                return self
            time.sleep(0.2)
        raise TimeoutError(f"make run not up after {timeout}s:\n{self.log()[-5000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_lines(self) -> list[str]:
        """The supervisor's own lines (not its children's), without the prefix."""
        return [line.split("|", 1)[1].strip() for line in self.log().splitlines() if line.startswith("    run |")]

    def pids(self) -> dict[str, int]:
        """Each live child's pid, by name (from /proc: parent and command line)."""
        assert self.proc is not None
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            state = stat.rsplit(")", 1)[1].split()[0]
            if ppid != self.proc.pid or state == "Z" or b"-m" not in argv:
                continue
            module = argv[argv.index(b"-m") + 1].decode()
            if module == "tagrate_common.child":  # python -m tagrate_common.child PARENT MODULE
                module = argv[argv.index(b"-m") + 3].decode()
            name = module.removeprefix("tagrate_")
            if name in PORT_OFFSETS:
                found[name] = int(entry.name)
        return found

    def wait_pid(self, child: str, not_pid: int | None = None, timeout: float = 60.0) -> int:
        """The pid of ``child`` once it is running (and is not ``not_pid``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = self.pids().get(child)
            if pid is not None and pid != not_pid:
                return pid
            time.sleep(0.05)
        raise TimeoutError(f"no new {child} process after {timeout}s")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 90.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill_everything(self) -> None:
        """Last resort for a failed test: the supervisor and any child left."""
        if self.proc is None:
            return
        children = list(self.pids().values()) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def http(stack: RunStack, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=timeout)
