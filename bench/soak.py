"""Soak: the whole stack under steady mixed load for minutes, watching for
errors, latency drift and memory growth.

    python -m bench soak [--clients 32] [--duration 600] [--warmup 30]
        [--database postgresql://...] [--mix getuserdata=50,addrating=20,tag=15,ratebulk=15]

The stack is the one ``make run`` starts: the real supervisor
(``python -m tagrate_common.supervisor``) with every service and the gateway
as its children, a temporary ``TAGRATE_DATA_DIR``, and free ports (given to
the supervisor both as ``TAGRATE_RUN_BASE_PORT`` and as each
``<SERVICE>_PORT``; the gateway's address is read from the supervisor's
"tagrate is running" line, so either way works). Metrics ports are off.
SQLite by default; ``--database`` names a PostgreSQL server, on which a fresh
database is created for the run and dropped after it.

Setup (not measured): ``--users`` users each rate 12 new photos through
/addrating, by a taste a model can learn (the source photo sets the
rating); the first user's personal model is trained (/trainuser, then
/trainerstatus until it succeeded) so /ratebulk has a model to answer from;
once the background work has tagged a sample of the photos, their most
common tags (/getimagetags) become the tag filters. A sort the gateway
refuses (``predicted-desc``, a later part of the API) is left out of the
run, and the report says so.

Then ``--clients`` closed-loop clients (each one kept-alive HTTP/1.1
connection, no think time; asyncio in this one process, so the load
generator stays cheap, and its own CPU time is measured and printed) send
requests drawn by the ``--mix`` weights:

- /getuserdata: pages (``page`` 1-3, limit 60) of a random user: unfiltered
  with a random sort, 1-2 tag filters, a ``-tag`` exclusion, ``rated=no``
  (by date or by prediction), ``rated=all`` by name;
- /addrating: a new photo every time (one of scikit-image's sample photos
  or its mirror image at 320x240, with one random pixel changed, encoded as
  JPEG; uploads are checked distinct by sha256), rated by a random user, so
  the dataset and the background tagging/embedding/prediction work grow all
  run long;
- /tag: one photo from a fixed pool;
- /ratebulk: 4 photos from the pool, for the trained user or ``all``.

Every request must answer 200 with a well-formed body; anything else
(another status, a malformed body, a connection error, no answer within
``--timeout``) is an error, and the target is none. The first ``--warmup``
seconds are load but not counted; the ``--duration`` seconds after them are
measured. The supervisor's children's resident memory (VmRSS from
/proc/<pid>/status) is sampled every ``--rss-interval`` seconds; the report
prints it at the end of the warm-up, at each 20% of the run and at the end,
with the growth after warm-up (target: flat). The supervisor restarts a
child that dies; a restart counts as a failure. /verifydatasets' backlog
(images not yet tagged) is read at the same moments.

Printed: requests and errors by endpoint and status, p50/p95/p99 latency
(of the requests that succeeded) and throughput per endpoint, the same per
fifth of the run (drift), each process's CPU time and RSS over time, and the
load generator's own CPU time. Every sample (each request's start, endpoint,
variant, status and latency; every RSS reading) is saved as JSON under
``bench/results/`` (or ``--output``). The exit status is 0 only when no
request failed and no child was restarted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import psycopg
from PIL import Image

from tagrate_common.config import DEFAULT_METRICS_PORTS, DEFAULT_PORTS
from tests.support import REPO_ROOT

from .harness import KeepAliveHttp, print_table

RESULTS_DIR = REPO_ROOT / "bench" / "results"
ENDPOINTS = ("getuserdata", "addrating", "tag", "ratebulk")
DEFAULT_MIX = "getuserdata=50,addrating=20,tag=15,ratebulk=15"
SEED_RATINGS = 12  # per user before the run: above the trainer's default minimum of 10
SEED_TASTE = (0.9, 0.1, 0.6, 0.3)  # the seed ratings of the cat, the coffee, the astronaut, the rocket
BULK_IMAGES = 4
POOL_IMAGES = 8  # distinct photos /tag and /ratebulk draw from
PHOTO_SIZE = (320, 240)
PAGE_LIMIT = 60
SORTS = ("date-desc", "date-asc", "rating-desc", "rating-asc", "name-asc", "predicted-desc")
CHECKPOINTS = 5  # the run is reported in fifths
# Order of the ports in the reserved block: the gateway first, as
# TAGRATE_RUN_BASE_PORT's block puts it, then the services.
PORT_ORDER = ("GATEWAY", "TAGGER", "RATER", "DATASET", "TRAINER")
PORT_BLOCK = 16  # reserved free ports from the base (room for metrics ports too)
_RUNNING_LINE = re.compile(r"tagrate is running: (http://\S+)")
_UNSET = float("nan")
_DEFAULT_PORTS = {*DEFAULT_PORTS.values(), *DEFAULT_METRICS_PORTS.values()}


# -- photos ---------------------------------------------------------------------


class Photos:
    """Small real photos: a fixed pool, and a new distinct one on demand."""

    def __init__(self, seed: int) -> None:
        import skimage.data

        sources = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
        bases = []
        for pixels in sources:
            image = Image.fromarray(pixels).convert("RGB").resize(PHOTO_SIZE)
            bases += [np.array(image), np.array(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
        self.bases = bases
        self.rng = random.Random(seed)
        self.seen: set[bytes] = set()
        self.pool = [self._encode(bases[i % len(bases)]) for i in range(POOL_IMAGES)]
        self.seen.update(hashlib.sha256(data).digest() for data in self.pool)

    @staticmethod
    def _encode(pixels: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=88)
        return buf.getvalue()

    def new(self, base: int | None = None) -> bytes:
        """A JPEG never returned before: base photo ``base`` (default: a random
        one) with one random pixel set to a random colour (restored after
        encoding, so no copy)."""
        while True:
            pixels = self.bases[base] if base is not None else self.rng.choice(self.bases)
            y, x = self.rng.randrange(pixels.shape[0]), self.rng.randrange(pixels.shape[1])
            old = pixels[y, x].copy()
            pixels[y, x] = [self.rng.randrange(256) for _ in range(3)]
            data = self._encode(pixels)
            pixels[y, x] = old
            digest = hashlib.sha256(data).digest()
            if digest not in self.seen:  # a change the quantisation erased: draw again
                self.seen.add(digest)
                return data


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body and its Content-Type header."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        )
        parts += [head.encode(), data, b"\r\n"]
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# -- the stack -------------------------------------------------------------------


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


def read_proc_stat(pid: int) -> tuple[int, float]:
    """A process's parent pid and CPU seconds (user + system) from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (NaN once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _UNSET


def cpu_seconds(pid: int) -> float:
    try:
        return read_proc_stat(pid)[1]
    except (OSError, ValueError, IndexError):
        return _UNSET


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

    def __init__(self, data_dir: Path, database_url: str | None) -> None:
        """Starts ``python -m tagrate_common.supervisor`` on free ports (see
        :meth:`wait_running`); :meth:`stop` stops it whatever state it is in."""
        base = free_port_block()
        env = {**os.environ, "TAGRATE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
        env["TAGRATE_RUN_BASE_PORT"] = str(base)
        env.update({f"{name}_PORT": str(base + i) for i, name in enumerate(PORT_ORDER)})
        env.update({f"{name}_METRICS_PORT": "0" for name in PORT_ORDER[1:]})
        if database_url:
            env["DATABASE_URL"] = database_url
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
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


# -- setup -----------------------------------------------------------------------


@dataclass
class World:
    """What the run's requests draw from."""

    users: list[str]
    trained_user: str
    tags: list[str]
    photos: Photos
    sorts: list[str]  # the sorts this gateway accepts (predicted-* is a later part of the API)
    setup_seconds: dict[str, float] = field(default_factory=dict)


def _expect(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    if response.status_code != status:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text}"
        )
    return response.json()


def _wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"setup: {what} did not happen within {timeout:.0f}s")
        time.sleep(0.25)


def setup(url: str, user_count: int, photos: Photos, seed: int) -> World:
    """Users with ratings, one trained personal model, the tags found (module doc)."""
    rng = random.Random(seed)
    users = [f"soak{i:02d}" for i in range(user_count)]
    timings = {}
    with httpx.Client(base_url=url, timeout=120) as http:
        start = time.perf_counter()
        stored = []
        for user in users:
            for i in range(SEED_RATINGS):
                # A taste a model can learn (the trainer publishes only a
                # model that beats predicting the mean): by source photo.
                base = i % len(photos.bases)
                rating = f"{min(1.0, max(0.0, SEED_TASTE[base // 2] + rng.uniform(-0.05, 0.05))):.3f}"
                files = {"image": (f"seed-{i}.jpg", photos.new(base), "image/jpeg")}
                answer = _expect(http.post("/addrating", data={"user": user, "rating": rating}, files=files))
                stored.append(answer["image"])
        timings["seed ratings"] = time.perf_counter() - start

        start = time.perf_counter()
        trained = users[0]
        _expect(http.get("/trainuser", params={"user": trained}), 202)

        def finished() -> bool:
            status = _expect(http.get("/trainerstatus"))["status"]
            if status["is_training"]:
                return False
            if status["state"] != "succeeded":
                raise RuntimeError(f"setup: training {trained} ended {status['state']}: {status['last_job']}")
            return True

        _wait(f"training {trained}'s model", finished, 300)
        pool = photos.pool[:BULK_IMAGES]
        _expect(http.post("/ratebulk", data={"user": trained}, files=[("images", ("p.jpg", p)) for p in pool]))
        timings["training"] = time.perf_counter() - start

        start = time.perf_counter()
        # Filters need tags: wait for the background work to tag the seed
        # photos; the most common tags first (filters by tags people see,
        # which match something).
        sample = stored[:: max(1, len(stored) // 16)]
        found: Counter[str] = Counter()

        def tagged() -> bool:
            found.clear()
            answers = [_expect(http.get("/getimagetags", params={"image": name})) for name in sample]
            for answer in answers:
                found.update(answer["tags"])
            return all(answer["tagged"] for answer in answers)

        _wait("tagging of the seed photos", tagged, 180)
        timings["background tagging"] = time.perf_counter() - start

        sorts = []
        for sort in SORTS:
            response = http.get("/getuserdata", params={"user": trained, "page": 1, "sort": sort})
            if response.status_code == 200:
                sorts.append(sort)
            elif response.status_code != 400:
                _expect(response)
    return World(users, trained, [tag for tag, _ in found.most_common(20)], photos, sorts, timings)


# -- the load --------------------------------------------------------------------


@dataclass
class Request:
    endpoint: str
    variant: str
    method: str
    target: str
    body: bytes = b""
    headers: dict[str, str] | None = None
    check: Callable[[Any], bool] = lambda body: True


def _userdata_ok(body: Any) -> bool:
    return isinstance(body.get("images"), list) and len(body["images"]) <= PAGE_LIMIT and "total" in body


class Workload:
    """Draws the next request of a client (module doc)."""

    def __init__(self, world: World, mix: dict[str, float], seed: int) -> None:
        self.world, self.seed = world, seed
        self.names = [name for name in ENDPOINTS if mix.get(name, 0) > 0]
        self.weights = [mix[name] for name in self.names]

    def draw(self, rng: random.Random) -> Request:
        endpoint = rng.choices(self.names, self.weights)[0]
        return getattr(self, endpoint)(rng)

    def getuserdata(self, rng: random.Random) -> Request:
        world = self.world
        params: dict[str, Any] = {"user": rng.choice(world.users), "page": rng.randint(1, 3)}
        variant = rng.choice(("unfiltered", "filtered", "excluded", "unrated", "all-by-name"))
        if variant == "filtered" and world.tags:
            params["filters"] = ",".join(rng.sample(world.tags[:10], k=min(len(world.tags[:10]), rng.randint(1, 2))))
            params["page"] = 1
        elif variant == "excluded" and world.tags:
            params["filters"] = f"-{rng.choice(world.tags[:10])}"
        elif variant == "unrated":
            params.update(rated="no", sort=rng.choice([s for s in ("date-desc", "predicted-desc") if s in world.sorts]))
        elif variant == "all-by-name":
            params.update(rated="all", sort="name-asc")
        else:
            variant = "unfiltered"
            params["sort"] = rng.choice(world.sorts)
        return Request("getuserdata", variant, "GET", f"/getuserdata?{urlencode(params)}", check=_userdata_ok)

    def addrating(self, rng: random.Random) -> Request:
        user = rng.choice(self.world.users)
        body, headers = multipart(
            [("user", user), ("rating", f"{rng.random():.3f}")], [("image", "upload.jpg", self.world.photos.new())]
        )
        return Request(
            "addrating", "new photo", "POST", "/addrating", body, headers,
            check=lambda b: b.get("new_image") is True and b.get("user") == user,
        )  # fmt: skip

    def tag(self, rng: random.Random) -> Request:
        body, headers = multipart([], [("image", "photo.jpg", rng.choice(self.world.photos.pool))])
        return Request(
            "tag", "pool photo", "POST", "/tag", body, headers, check=lambda b: isinstance(b.get("tags"), list)
        )

    def ratebulk(self, rng: random.Random) -> Request:
        user = rng.choice((self.world.trained_user, "all"))
        files = [("images", f"{i}.jpg", data) for i, data in enumerate(rng.sample(self.world.photos.pool, BULK_IMAGES))]
        body, headers = multipart([("user", user)], files)
        return Request(
            "ratebulk", f"{BULK_IMAGES} photos, user={'one' if user != 'all' else 'all'}", "POST", "/ratebulk",
            body, headers, check=lambda b: len(b.get("ratings", ())) == BULK_IMAGES,
        )  # fmt: skip


@dataclass
class Sample:
    start: float  # seconds since the warm-up began
    endpoint: str
    variant: str
    status: int | str  # the HTTP status, or "bad body", "timeout", "connection error"
    ms: float


@dataclass
class Run:
    """Everything measured; times are seconds since the warm-up began."""

    clients: int
    warmup: float
    duration: float
    rss_interval: float
    samples: list[Sample] = field(default_factory=list)
    rss: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[tuple[str, float, dict[str, float]]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds during the measured part
    generator_cpu: float = 0.0
    examples: dict[tuple[str, int | str], str] = field(default_factory=dict)  # the first failure of each kind
    backlog: list[tuple[str, object, object]] = field(default_factory=list)  # untagged, pending predictions
    pids: dict[str, list[int]] = field(default_factory=dict)  # every pid each child had (more than one: restarted)

    def restarts(self) -> dict[str, int]:
        return {name: len(pids) - 1 for name, pids in self.pids.items() if len(pids) > 1}

    def measured(self) -> list[Sample]:
        return [s for s in self.samples if s.start >= self.warmup]


def _ok(request: Request, status: int, payload: bytes) -> int | str:
    if status != 200:
        return status
    try:
        return 200 if request.check(json.loads(payload)) else "bad body"
    except (ValueError, AttributeError, TypeError):
        return "bad body"


async def client(index: int, stack: Stack, workload: Workload, run: Run, t0: float, end: float, timeout: float) -> None:
    """One closed-loop client: a request, its answer, the next request."""
    rng = random.Random(workload.seed * 1000 + index)
    http = KeepAliveHttp(stack.host, stack.port)
    try:
        while time.perf_counter() < end:
            request = workload.draw(rng)
            start = time.perf_counter()
            payload = b""
            try:
                status, payload = await asyncio.wait_for(
                    http.request(request.method, request.target, request.body, request.headers), timeout
                )
                outcome = _ok(request, status, payload)
            except TimeoutError:
                outcome = "timeout"
                await http.close()
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                outcome, payload = "connection error", repr(exc).encode()
                await http.close()
            run.samples.append(
                Sample(start - t0, request.endpoint, request.variant, outcome, (time.perf_counter() - start) * 1000)
            )
            if outcome != 200:
                run.examples.setdefault(
                    (request.endpoint, outcome), f"{request.method} {request.target[:120]}: {payload[:300]!r}"
                )
    finally:
        await http.close()


def _rss_now(stack: Stack, run: Run) -> dict[str, float]:
    """Every child's RSS now. The supervisor restarts a child that died, so
    the children are looked up afresh each time and a new pid is noted."""
    current = children_of(stack.proc.pid)
    for name, pid in current.items():
        seen = run.pids.setdefault(name, [pid])
        if seen[-1] != pid:
            seen.append(pid)
    readings = {name: rss_mib(current[name]) if name in current else _UNSET for name in stack.children}
    readings["load generator"] = rss_mib(os.getpid())
    return readings


async def sample_rss(stack: Stack, run: Run, t0: float, end: float, interval: float) -> None:
    while True:
        run.rss.append((time.perf_counter() - t0, _rss_now(stack, run)))
        if time.perf_counter() >= end:
            return
        await asyncio.sleep(min(interval, max(0.0, end - time.perf_counter())))


def _generator_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def record_backlog(http: KeepAliveHttp, run: Run, label: str) -> None:
    """The background work still to do, as /verifydatasets counts it (the
    run's new photos are tagged, embedded and scored behind its back)."""
    try:
        status, payload = await asyncio.wait_for(http.get("/verifydatasets"), 60)
    except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
        run.backlog.append((label, f"n/a ({type(exc).__name__})", ""))
        await http.close()
        return
    if status != 200:
        run.backlog.append((label, f"n/a ({status})", ""))
        return
    body = json.loads(payload)
    run.backlog.append((label, body.get("untagged_images", "n/a"), body.get("pending_predictions", "n/a")))


async def drive(stack: Stack, world: World, mix: dict[str, float], args: argparse.Namespace) -> Run:
    """The warm-up then the measured run, with RSS checkpoints."""
    run = Run(args.clients, args.warmup, args.duration, args.rss_interval)
    workload = Workload(world, mix, args.seed)
    t0 = time.perf_counter()
    end = t0 + args.warmup + args.duration
    tasks = [asyncio.create_task(client(i, stack, workload, run, t0, end, args.timeout)) for i in range(args.clients)]
    tasks.append(asyncio.create_task(sample_rss(stack, run, t0, end, args.rss_interval)))

    probe = KeepAliveHttp(stack.host, stack.port)
    await asyncio.sleep(max(0.0, t0 + args.warmup - time.perf_counter()))
    run.checkpoints.append(("warm-up end", time.perf_counter() - t0, _rss_now(stack, run)))
    await record_backlog(probe, run, "warm-up end")
    cpu_before = {name: cpu_seconds(pid) for name, pid in stack.children.items()}
    generator_before = _generator_cpu()
    for k in range(1, CHECKPOINTS + 1):
        at = t0 + args.warmup + args.duration * k / CHECKPOINTS
        await asyncio.sleep(max(0.0, at - time.perf_counter()))
        label = f"{100 * k // CHECKPOINTS}%"
        run.checkpoints.append((label, time.perf_counter() - t0, _rss_now(stack, run)))
        await record_backlog(probe, run, label)
    # A restarted child's first pid is gone: its figure is NaN, not a wrong one.
    run.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in stack.children.items()}
    run.generator_cpu = _generator_cpu() - generator_before
    await asyncio.gather(*tasks)  # the requests in flight at the end finish (they count if they started in time)
    await record_backlog(probe, run, "after the last request")
    await probe.close()
    return run


# -- the report ------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else _UNSET


def report(run: Run, world: World, stack: Stack, database: str, load: tuple[float, float]) -> int:
    """Prints the tables; returns the number of failed requests."""
    measured = run.measured()
    by_endpoint: dict[str, list[Sample]] = defaultdict(list)
    for s in measured:
        by_endpoint[s.endpoint].append(s)

    print_table(
        f"Requests and errors by endpoint and status ({run.duration:.0f} s measured after {run.warmup:.0f} s "
        f"warm-up; target: 0 errors)",
        ["endpoint", "status", "requests", "share %"],
        [
            [f"/{endpoint}", status, count, 100 * count / max(1, len(by_endpoint[endpoint]))]
            for (endpoint, status), count in sorted(
                Counter((s.endpoint, str(s.status)) for s in measured).items(),
                key=lambda kv: (ENDPOINTS.index(kv[0][0]), kv[0][1]),
            )
        ],
    )

    rows = []
    for endpoint in [e for e in ENDPOINTS if e in by_endpoint] + ["(all)"]:
        samples = measured if endpoint == "(all)" else by_endpoint[endpoint]
        ok = [s.ms for s in samples if s.status == 200]
        errors = len(samples) - len(ok)
        name = endpoint if endpoint == "(all)" else f"/{endpoint}"
        rows.append([name, len(samples), errors, len(samples) / run.duration, percentile(ok, 50),
                     percentile(ok, 95), percentile(ok, 99), max(ok, default=_UNSET)])  # fmt: skip
    print_table(
        f"Latency (successful requests) and throughput, {run.clients} clients",
        ["endpoint", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"],
        rows,
    )

    variants = Counter((s.endpoint, s.variant) for s in measured)
    rows = []
    for (endpoint, variant), count in sorted(variants.items(), key=lambda kv: (ENDPOINTS.index(kv[0][0]), kv[0][1])):
        ok = [s.ms for s in by_endpoint[endpoint] if s.variant == variant and s.status == 200]
        rows.append([f"/{endpoint}", variant, count, percentile(ok, 50), percentile(ok, 95)])
    print_table("By request variant", ["endpoint", "variant", "requests", "p50 ms", "p95 ms"], rows)

    # Drift: the same figures per fifth of the run.
    present = [e for e in ENDPOINTS if e in by_endpoint]
    rows = []
    for k in range(CHECKPOINTS):
        lo = run.warmup + run.duration * k / CHECKPOINTS
        hi = run.warmup + run.duration * (k + 1) / CHECKPOINTS
        part = [s for s in measured if lo <= s.start < hi]
        row: list[object] = [f"{100 * k // CHECKPOINTS}-{100 * (k + 1) // CHECKPOINTS}%", len(part) / (hi - lo)]
        row.append(sum(1 for s in part if s.status != 200))
        row += [percentile([s.ms for s in part if s.endpoint == e and s.status == 200], 95) for e in present]
        rows.append(row)
    print_table(
        "Over time (target: flat)", ["part of run", "req/s", "errors", *(f"/{e} p95 ms" for e in present)], rows
    )

    names = [*stack.children, "load generator"]
    rows = [[label, round(at - run.warmup, 1), *(readings.get(n, _UNSET) for n in names)]
            for label, at, readings in run.checkpoints]  # fmt: skip
    if run.checkpoints:
        first, last = run.checkpoints[0][2], run.checkpoints[-1][2]
        rows.append(["growth after warm-up", "", *(last.get(n, _UNSET) - first.get(n, _UNSET) for n in names)])
        peak = {n: max((r.get(n, _UNSET) for t, r in run.rss if t >= run.warmup), default=_UNSET) for n in names}
        rows.append(["peak after warm-up", "", *(peak[n] for n in names)])
    print_table(
        f"Resident memory (VmRSS, MiB), sampled every {run.rss_interval:g} s; target: flat after warm-up",
        ["when", "s into run", *names],
        rows,
    )

    print_table(
        "Background work backlog (/verifydatasets): photos stored but not yet tagged, scores not yet computed",
        ["when", "untagged images", "pending predictions"],
        [list(row) for row in run.backlog],
    )

    cores = os.cpu_count() or 1
    rows = [[name, stack.children[name], seconds, 100 * seconds / run.duration] for name, seconds in run.cpu.items()]
    rows.append(
        ["load generator (this process)", os.getpid(), run.generator_cpu, 100 * run.generator_cpu / run.duration]
    )
    print_table(
        f"CPU time during the measured {run.duration:.0f} s ({cores} cores; 100% = one core)",
        ["process", "pid", "CPU s", "% of a core"],
        rows,
    )
    per_request_ms = 1000 * run.generator_cpu / max(1, len(measured))
    print(f"\nload generator: {per_request_ms:.2f} ms of CPU per request (building bodies, new JPEGs, parsing)")
    print(f"database: {database}; users {len(world.users)}, trained: {world.trained_user}; "
          f"filter tags: {', '.join(world.tags[:5]) or '(none)'}{' ...' if len(world.tags) > 5 else ''}")  # fmt: skip
    setup_text = ", ".join(f"{k} {v:.1f} s" for k, v in world.setup_seconds.items())
    print(f"setup: {setup_text}")
    refused = [sort for sort in SORTS if sort not in world.sorts]
    if refused:
        print(f"sorts this gateway refuses, left out of the run: {', '.join(refused)}")
    print(f"1-minute load average on {cores} cores, before -> after the run: {load[0]:.1f} -> {load[1]:.1f}")

    failed = sum(1 for s in measured if s.status != 200)
    warmup_failed = sum(1 for s in run.samples if s.start < run.warmup and s.status != 200)
    if warmup_failed:
        print(f"\nduring the warm-up (not counted above): {warmup_failed} failed requests")
    for (endpoint, status), example in run.examples.items():
        print(f"first /{endpoint} {status}: {example}")
    return failed


def log_problems(stack: Stack) -> list[str]:
    """The supervisor log's lines at WARNING or above (children's logs included)."""
    lines = stack.log_path.read_text(errors="replace").splitlines()
    return [line for line in lines if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback", line)]


def save(path: Path, run: Run, world: World, stack: Stack, args: argparse.Namespace, problems: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "arguments": {k: v for k, v in vars(args).items() if k != "output"},
        "database": "postgresql" if args.database else "sqlite",
        "cores": os.cpu_count(),
        "processes": {**stack.children, "load generator": os.getpid()},
        "users": world.users,
        "trained_user": world.trained_user,
        "filter_tags": world.tags,
        "sorts": world.sorts,
        "setup_seconds": world.setup_seconds,
        "warmup_seconds": run.warmup,
        "duration_seconds": run.duration,
        "samples_fields": ["start_s", "endpoint", "variant", "status", "ms"],
        "samples": [[round(s.start, 4), s.endpoint, s.variant, s.status, round(s.ms, 3)] for s in run.samples],
        "rss_mib": [{"at_s": round(t, 3), **readings} for t, readings in run.rss],
        "checkpoints": [{"label": label, "at_s": round(t, 3), "rss_mib": r} for label, t, r in run.checkpoints],
        "backlog": [{"label": label, "untagged_images": u, "pending_predictions": p} for label, u, p in run.backlog],
        "cpu_seconds": {**run.cpu, "load generator": run.generator_cpu},
        "pids": run.pids,
        "log_problems": problems[:200],
    }
    path.write_text(json.dumps(document, allow_nan=True))


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for item in text.split(","):
        name, _, weight = item.partition("=")
        name = name.strip().lstrip("/")
        if name not in ENDPOINTS:
            raise argparse.ArgumentTypeError(f"unknown endpoint {name!r} in --mix (known: {', '.join(ENDPOINTS)})")
        try:
            mix[name] = float(weight)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--mix weight of {name} is not a number: {weight!r}") from None
        if mix[name] < 0:
            raise argparse.ArgumentTypeError(f"--mix weight of {name} is negative")
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("--mix gives every endpoint weight 0")
    return mix


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="Concurrent closed-loop clients (default 32).")
    parser.add_argument("--duration", type=float, default=600, help="Measured seconds after the warm-up (default 600).")
    parser.add_argument("--warmup", type=float, default=30, help="Seconds of load before measuring (default 30).")
    parser.add_argument(
        "--database",
        default=None,
        help="A PostgreSQL URL (postgresql://user@host:port/db): the run gets a fresh database on that server, "
        "dropped after it. Default: SQLite in the temporary data directory.",
    )
    parser.add_argument(
        "--mix", type=parse_mix, default=parse_mix(DEFAULT_MIX), help=f"Endpoint weights (default {DEFAULT_MIX})."
    )
    parser.add_argument("--users", type=int, default=8, help="Users rating and reading (default 8).")
    parser.add_argument("--timeout", type=float, default=120, help="Seconds before a request counts as failed.")
    parser.add_argument("--rss-interval", type=float, default=5, help="Seconds between RSS samples (default 5).")
    parser.add_argument("--seed", type=int, default=2026, help="Seed of the photos and ratings.")
    parser.add_argument("--output", type=Path, default=None, help="The JSON of raw samples (default bench/results/).")
    args = parser.parse_args(argv or [])
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0 or args.users < 1 or args.rss_interval <= 0:
        parser.error("--clients and --users must be 1 or more, --duration and --rss-interval positive")
    if args.database and not args.database.startswith(("postgresql://", "postgres://")):
        parser.error("--database must be a postgresql:// URL (SQLite is the default)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"soak-{stamp}.json"

    database = "postgresql" if args.database else "sqlite"
    print(f"{os.cpu_count()} cores; {args.clients} clients, {args.warmup:.0f} s warm-up + {args.duration:.0f} s, "
          f"{database}, mix {args.mix}", flush=True)  # fmt: skip
    photos = Photos(args.seed)
    # A SIGTERM (``timeout``, a CI runner) unwinds like Ctrl-C, so the stack
    # and the temporary database are still cleaned up.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(signal.signal, signal.SIGTERM, previous)
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="tagrate-soak-")))
        database_url = cleanup.enter_context(fresh_postgres(args.database)) if args.database else None
        started = time.perf_counter()
        stack = Stack(tmp / "data", database_url)
        cleanup.callback(stack.stop)
        stack.wait_running()
        print(f"stack up in {time.perf_counter() - started:.1f} s at {stack.url}: "
              f"{', '.join(f'{n} (pid {p})' for n, p in stack.children.items())}", flush=True)  # fmt: skip
        try:
            world = setup(stack.url, args.users, photos, args.seed)
        except Exception:
            print(stack.log_tail(), file=sys.stderr)
            raise
        print(f"setup done: {', '.join(f'{k} {v:.1f} s' for k, v in world.setup_seconds.items())}", flush=True)
        load_before = os.getloadavg()[0]
        run = asyncio.run(drive(stack, world, args.mix, args))
        load_after = os.getloadavg()[0]
        problems = log_problems(stack)
        failed = report(run, world, stack, database, (load_before, load_after))
        restarts = run.restarts()
        if restarts:  # a child died and the supervisor restarted it
            print(f"\nprocesses restarted during the run (target: none): {restarts}")
            failed += sum(restarts.values())
        print(f"\nlog lines at WARNING or above: {len(problems)}")
        for line in problems[:10]:
            print(f"  {line[:300]}")
        save(output, run, world, stack, args, problems)
        print(f"raw samples: {output}")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
