"""The soak's load: closed-loop clients drawing requests by the mix, the
resident memory sampled as they run, the background work's backlog at each
checkpoint."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..harness import KeepAliveHttp
from ..harness.photos import multipart
from ..harness.processes import UNSET, cpu_seconds, rss_mib
from ..harness.supervised_stack import Stack, children_of
from .plan import BULK_IMAGES, CHECKPOINTS, ENDPOINTS, PAGE_LIMIT
from .world import World


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
    readings = {name: rss_mib(current[name]) if name in current else UNSET for name in stack.children}
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
