"""A mixed load on a group of replicas, and SIGKILLing one replica of a
service under it (``bench/replicas.py`` and tests/run/test_replica_failover.py).

Clients: writers adding ratings (a distinct image each time, one user per
writer; an answered 200 is an acknowledged write), a reader listing a
user's ratings, a tagger client tagging one fixed image (every answer must
be the same), and a trainer client that keeps a training of ``writer0``
going. Requests go to the gateways in turn; a request no gateway answered
(connection refused or reset) is tried once on the next gateway, as a load
balancer in front of gateway replicas does. Every request is recorded
with its start, end and status.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tests.imagefactory import make_image

from .processes import read_proc_stat

WRITERS = 3
TRAINED_USER = "writer0"


def replica_pids(supervisor_pid: int) -> dict[str, int]:
    """The supervisor's children by ``<service>:<port>``, read from each
    child's environment (``TAGGER_PORT`` etc.), so replicas stay apart."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if read_proc_stat(int(entry.name))[0] != supervisor_pid:
                continue
            environ = dict(
                item.split("=", 1) for item in (entry / "environ").read_bytes().decode().split("\0") if "=" in item
            )
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError):
            continue
        service = argv[-2].removeprefix("tagrate_") if len(argv) > 2 else ""
        port = environ.get(f"{service.upper()}_PORT")
        if port:
            found[f"{service}:{port}"] = int(entry.name)
    return found


@dataclass
class Request:
    kind: str
    started: float
    ended: float
    status: int | None  # None: no gateway answered
    body: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500


@dataclass
class MixedLoad:
    gateways: list[str]
    requests: list[Request] = field(default_factory=list)
    acked: dict[str, dict[str, float]] = field(default_factory=dict)  # user -> image -> rating
    seeds: dict[str, int] = field(default_factory=dict)  # acknowledged upload -> its make_image seed
    tag_answers: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    pause: float = 0.05

    def _send(self, kind: str, client: httpx.Client, turn: itertools.cycle, send: Callable) -> Request:
        started, status, body = time.monotonic(), None, {}
        for _ in range(2):
            try:
                response = send(client, next(turn))
                status, body = response.status_code, response.json()
                break
            except (httpx.TransportError, ValueError):
                continue
        request = Request(kind, started, time.monotonic(), status, body)
        with self.lock:
            self.requests.append(request)
        return request

    def _loop(self, kind: str, step: Callable[[httpx.Client, itertools.cycle, int], None], offset: int) -> None:
        turn = itertools.cycle(
            self.gateways[offset % len(self.gateways) :] + self.gateways[: offset % len(self.gateways)]
        )
        with httpx.Client(timeout=60) as client:
            for n in itertools.count(1):
                if self.stop.is_set():
                    return
                step(client, turn, n)
                time.sleep(self.pause)

    def _write(self, index: int) -> Callable[[httpx.Client, itertools.cycle, int], None]:
        user = f"writer{index}"

        def step(client: httpx.Client, turn: itertools.cycle, n: int) -> None:
            seed = index * 1_000_000 + n
            image = upload(seed)
            # The image's blue level, so the ratings are a taste a model can learn.
            rating = round((seed % 256) / 255, 2)
            form = {"user": user, "rating": str(rating)}
            request = self._send(
                "addrating",
                client,
                turn,
                lambda c, url: c.post(f"{url}/addrating", data=form, files={"image": (f"{n}.jpg", image)}),
            )
            if request.status == 200:
                with self.lock:
                    self.acked.setdefault(user, {})[request.body["image"]] = rating
                    self.seeds[request.body["image"]] = seed

        return step

    def _read(self, client: httpx.Client, turn: itertools.cycle, n: int) -> None:
        user = f"writer{n % WRITERS}"
        self._send("getuserdata", client, turn, lambda c, url: c.get(f"{url}/getuserdata", params={"user": user}))

    def _tag(self, client: httpx.Client, turn: itertools.cycle, n: int) -> None:
        image = make_image("JPEG", (96, 64), seed=4242)
        request = self._send(
            "tag", client, turn, lambda c, url: c.post(f"{url}/tag", files={"image": ("t.jpg", image)})
        )
        if request.status == 200:
            with self.lock:
                self.tag_answers.add(repr(request.body))

    def _train(self, client: httpx.Client, turn: itertools.cycle, n: int) -> None:
        status = self._send("trainerstatus", client, turn, lambda c, url: c.get(f"{url}/trainerstatus"))
        if status.status != 200 or status.body["status"]["is_training"]:
            time.sleep(0.5)
            return
        if len(self.acked.get(TRAINED_USER, {})) >= 25:
            params = {"user": TRAINED_USER, "force": "true"}
            self._send("trainuser", client, turn, lambda c, url: c.post(f"{url}/trainuser", params=params))
        time.sleep(0.5)

    def start(self, training: bool = True) -> MixedLoad:
        steps = [self._write(i) for i in range(WRITERS)] + [self._read, self._tag] + ([self._train] if training else [])
        self.threads = [
            threading.Thread(target=self._loop, args=(f"load{i}", step, i), daemon=True) for i, step in enumerate(steps)
        ]
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)

    def since(self, start: float) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.started >= start]

    def failures(self) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.failed]


def kill(pid: int) -> float:
    """SIGKILLs ``pid``; returns when (monotonic clock)."""
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def upload(seed: int) -> bytes:
    """The image a writer uploads for ``seed``."""
    return make_image("JPEG", (48, 32), seed=seed)


def stored_ratings(gateway: str, user: str) -> dict[str, float]:
    """Every rating of ``user`` as the API lists it."""
    response = httpx.get(f"{gateway}/getuserdata", params={"user": user}, timeout=60)
    response.raise_for_status()
    return {item["image"]: item["rating"] for item in response.json()["images"]}


def second_gateway(supervisor_pid: int, port: int, log_path: Path) -> subprocess.Popen:
    """Another gateway replica with the supervised gateway's settings (every
    backend replica's address) on ``port``; ``make run`` starts one gateway,
    a deployment runs several behind a load balancer."""
    pid = next(pid for name, pid in replica_pids(supervisor_pid).items() if name.startswith("gateway:"))
    environ = dict(
        item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item
    )
    environ["GATEWAY_PORT"] = str(port)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout}s")


def running_job_owner(database_url: str) -> tuple[str, int] | None:
    """(job id, pid of the trainer replica running it) of the running job, or None."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        row = conn.execute(
            "SELECT id, owner FROM training_jobs WHERE state = 'running' AND owner IS NOT NULL"
        ).fetchone()
    return (row[0], int(row[1].rsplit("-", 2)[1])) if row else None


def job_row(database_url: str, job_id: str) -> tuple[str, int, str]:
    """(state, attempts, owner) of a job."""
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        return conn.execute("SELECT state, attempts, owner FROM training_jobs WHERE id = %s", (job_id,)).fetchone()
