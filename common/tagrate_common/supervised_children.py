"""The children ``make run`` starts: which services, in what order and at
what port offsets, what the gateway alone may read, one child's state; and
how the group prints their lines (prefixed with the child's name) and says
how one ended."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from .restarts import Restarts


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
# Only the gateway reads these; no other child gets them in its environment.
GATEWAY_ONLY_ENV = ("GATEWAY_ADMIN_TOKEN", "GATEWAY_ADMIN_TOKEN_FILE")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
INTERNAL_TOKEN_FILE = Path("run") / "internal-token"
_COLOURS = {"gateway": 36, "dataset": 32, "tagger": 35, "rater": 33, "trainer": 34, "run": 1}


class StartupError(RuntimeError):
    """The group cannot start; the message says why and what to change."""


def say(name: str, line: str, colour: int | None = None) -> None:
    prefix = f"{name:>7} |"
    if sys.stdout.isatty():
        prefix = f"\033[{_COLOURS.get(name.rstrip('0123456789'), 0)}m{prefix}\033[0m"
        if colour is not None:
            line = f"\033[{colour}m{line}\033[0m"
    sys.stdout.write(f"{prefix} {line}\n")
    sys.stdout.flush()


def how_ended(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"
