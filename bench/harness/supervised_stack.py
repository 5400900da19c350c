"""The whole stack as ``make run`` starts it: the real supervisor
(``python -m tagrate_common.supervisor``) with every service and the gateway
as its children, on a block of free ports, in a temporary data directory;
and a fresh PostgreSQL database for it."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS
from tests.support import REPO_ROOT

from .processes import read_proc_stat, stop_process

# Order of the ports in the reserved block: the gateway first, as
# TAGRATE_RUN_BASE_PORT's block puts it, then the services.
PORT_ORDER = ("GATEWAY", "TAGGER", "RATER", "DATASET", "TRAINER")
PORT_BLOCK = 16  # reserved free ports from the base (room for metrics ports too)
_RUNNING_LINE = re.compile(r"tagrate is running: (http://\S+)")


_DEFAULT_PORTS = {*DEFAULT_PORTS.values(), *DEFAULT_METRICS_PORTS.values()}


def free_port_block(size: int = PORT_BLOCK) -> int:
    """The first of ``size`` consecutive ports that are free now (none of the defaults)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        block = range(base, base + size)
        if base + size > 65535 or any(port in block for port in _DEFAULT_PORTS):
            continue  # a developer's own `make run` may want those
        held = []
        try:
            for port in block:
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {size} consecutive free ports found")


def children_of(pid: int) -> dict[str, int]:
    """The direct children of ``pid``, named by the ``tagrate_*`` module they run."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if read_proc_stat(int(entry.name))[0] != pid:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError, IndexError):
            continue
        module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else Path(argv[0]).name
        if module == "tagrate_common.child":  # python -m tagrate_common.child PARENT MODULE
            module = argv[argv.index("-m") + 3]
        found[module.removeprefix("tagrate_")] = int(entry.name)
    order = ["gateway", *(name.lower() for name in PORT_ORDER[1:])]
    return dict(sorted(found.items(), key=lambda item: (order.index(item[0]) if item[0] in order else 99, item[0])))


class Stack:
    """The supervisor and its children, in a temporary data directory."""

    def __init__(self, data_dir: Path, database_url: str | None, extra_env: dict[str, str] | None = None) -> None:
        """Starts ``python -m tagrate_common.supervisor`` on free ports (see
        :meth:`wait_running`); :meth:`stop` stops it whatever state it is in."""
        base = free_port_block()
        env = {**os.environ, "TAGRATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        env["TAGRATE_RUN_BASE_PORT"] = str(base)
        env.update({f"{name}_PORT": str(base + i) for i, name in enumerate(PORT_ORDER)})
        env.update({f"{name}_METRICS_PORT": "0" for name in PORT_ORDER[1:]})
        if database_url:
            env["DATABASE_URL"] = database_url
        env.update(extra_env or {})
        self.log_path = data_dir.parent / "supervisor.log"
        self.url = ""
        self.children: dict[str, int] = {}  # name -> pid, as the run began
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tagrate_common.supervisor"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,  # a Ctrl-C of the benchmark reaches the supervisor only through stop()
            )

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://").rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def wait_running(self, timeout: float = 300) -> None:
        """Returns once the supervisor says tagrate is running (the gateway
        answered /readyz); the gateway's address is read from that line."""
        deadline = time.monotonic() + timeout
        while True:
            found = _RUNNING_LINE.search(self.log_path.read_text(errors="replace"))
            if found:
                self.url = found.group(1)
                self.children = children_of(self.proc.pid)
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(timeout=30)  # a supervisor stuck starting may never get to its SIGTERM handler
                raise RuntimeError(f"the supervisor did not start tagrate:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 120) -> int | None:
        """SIGTERM to the supervisor, which stops the gateway then the
        services; SIGKILL after ``timeout`` (its children then get SIGTERM
        from their parent-death signal)."""
        stop_process(self.proc, timeout)
        return self.proc.returncode


@contextlib.contextmanager
def fresh_postgres(server_url: str) -> Iterator[str]:
    """A new database on the server of ``server_url`` (which is used only to
    connect), dropped afterwards."""
    name = f"tagrate_soak_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
