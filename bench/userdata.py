"""/getuserdata under a realistic dataset: ``python -m bench userdata
[--db sqlite|postgresql|both] [--calls N] [--scale F]``.

The dataset (issue 2, part 6): 100,000 images, 20 users, 500,000 ratings,
2,000 distinct tags, ~20 tags per image, seeded. It is written straight
through the dataset service's own storage layer (``db.migrate`` and
``bulk.bulk_load``), not through the API: no blobs, only rows.

- Tags: the tag of popularity rank r is drawn with probability ~ 1/r (Zipf,
  s = 1), so a few tags are on most images and most tags are rare. Each
  image gets a uniform 15-25 distinct tags at or above the tagger model's
  threshold (scores uniform in [threshold, 1)) plus 3 more below it (scores
  uniform in [0.05, threshold)) that tag filters must not count. Tag names
  say their rank: ``tag_1`` is the most common.
- Ratings: user k of n rates a uniform random sample of the images, sample
  sizes spread linearly from 0.5x to 1.5x the mean (25,000); ratings are
  uniform in [0, 1], rated after the image was stored.

The SQLite file is cached under ``bench/results/`` (keyed by the shape, so
reruns skip generation); PostgreSQL gets a fresh database on the server of
``TAGRATE_TEST_PG_ADMIN_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``),
dropped at the end.

Then the real dataset service and the real gateway run as their own
processes (``python -m tagrate_dataset``, ``python -m tagrate_gateway``) and
this process measures /getuserdata with httpx: an unfiltered page, a 2-tag
filtered page, a ``-tag`` exclusion and ``rated=no``, at concurrency 1 and 8.
Users, tags and pages vary across requests (a seeded list; filter tags are
drawn by popularity, as people filter by the tags they see), so no cache
makes it trivial. Last, the gateway's own overhead: the same GetUserData
requests sent straight to the dataset service (the grpc.aio client the
gateway itself uses) and through the gateway, at concurrency 1.

``--floor``: every query shape against the most efficient hand-written SQL
statement for it, interleaved (``bench/userdata_floor.py``).

Targets (issue 2): p50 of a 2-tag filtered page under 50 ms on both
databases (judged at concurrency 1), gateway overhead under 3 ms p50.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import psycopg

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_client import AsyncBackend
from tagrate_common.protos import library_pb2
from tagrate_dataset.bulk import bulk_load
from tagrate_dataset.db import create_db_engine, migrate
from tests.support import REPO_ROOT, ServiceProcess, free_port

from .harness import KeepAliveHttp, Stats, measure, median, print_table

RESULTS_DIR = REPO_ROOT / "bench" / "results"
PG_ADMIN_URL = os.environ.get("TAGRATE_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Bumped whenever generation changes what a given shape produces, so stale
# cached files are not reused.
GENERATOR_VERSION = 1

TARGET_FILTERED_P50_MS = 50.0
TARGET_OVERHEAD_P50_MS = 3.0
CONCURRENCIES = (1, 8)
# Requests per measurement by default: a full run (p95 from 200 samples),
# and a quick look at a smaller scale.
FULL_CALLS, QUICK_CALLS = 200, 50

THRESHOLD = 0.35  # the tagger model's
TAG_COUNT_SPREAD = 5  # tags per image: uniform in mean +- this
BELOW_THRESHOLD_TAGS = 3
PAGE_SIZE = 60  # the API's default page size, which clients use
T0 = datetime(2025, 1, 1, tzinfo=UTC)
SPAN_SECONDS = 365 * 24 * 3600

UNFILTERED, FILTERED, EXCLUDED, UNRATED = "unfiltered page", "2-tag filtered page", "-tag exclusion", "rated=no"
SCENARIOS = (UNFILTERED, FILTERED, EXCLUDED, UNRATED)


# -- the dataset -----------------------------------------------------------------


@dataclass(frozen=True)
class DatasetShape:
    images: int = 100_000
    users: int = 20
    ratings: int = 500_000
    tags: int = 2_000
    tags_per_image: int = 20
    seed: int = 2026

    def scaled(self, fraction: float) -> DatasetShape:
        """Fewer images and ratings (users, tags and tags per image stay)."""
        images = max(100, round(self.images * fraction))
        return replace(self, images=images, ratings=max(self.users, round(self.ratings * fraction)))

    @property
    def key(self) -> str:
        """Names the cached database file: every parameter that changes its content."""
        return (
            f"userdata-i{self.images}-u{self.users}-r{self.ratings}-t{self.tags}-k{self.tags_per_image}"
            f"-s{self.seed}-v{GENERATOR_VERSION}"
        )

    def ratings_per_user(self) -> list[int]:
        """How many images each user rated: spread linearly from 0.5x to
        1.5x the mean, summing to ``ratings`` (none above ``images``)."""
        weights = np.linspace(0.5, 1.5, self.users) if self.users > 1 else np.ones(1)
        counts = np.floor(weights / weights.sum() * self.ratings).astype(int)
        counts[-1] += self.ratings - counts.sum()
        return [min(int(c), self.images) for c in counts]

    @staticmethod
    def user_name(index: int) -> str:
        return f"user{index + 1:02d}"

    @staticmethod
    def tag_name(rank: int) -> str:
        return f"tag_{rank}"

    def tag_popularity(self) -> np.ndarray:
        """P(a draw is the tag of rank r), r = 1..tags: Zipf with s = 1."""
        weights = 1.0 / np.arange(1, self.tags + 1)
        return weights / weights.sum()


@dataclass
class Dataset:
    """Generated rows as arrays (ids are 1-based, as stored)."""

    shape: DatasetShape
    image_created: np.ndarray  # seconds after T0, per image
    rating_user: np.ndarray
    rating_image: np.ndarray
    rating_value: np.ndarray
    rating_seconds: np.ndarray
    tag_image: np.ndarray
    tag_id: np.ndarray
    tag_score: np.ndarray

    def tables(self) -> dict[str, Iterable[dict[str, Any]]]:
        """The rows ``bulk_load`` takes, one table per keyword."""
        shape = self.shape
        created = [T0 + timedelta(seconds=s) for s in self.image_created.tolist()]

        def images() -> Iterator[dict[str, Any]]:
            for image_id, at in enumerate(created, start=1):
                sha = hashlib.sha256(f"{shape.seed}:{image_id}".encode()).hexdigest()
                size = 50_000 + image_id % 90_000
                yield {"id": image_id, "sha256": sha, "name": f"{sha}.jpg", "format": "JPEG",
                       "size_bytes": size, "width": 768, "height": 512, "created_at": at}  # fmt: skip

        ratings = (
            {"user_id": u, "image_id": i, "rating": r, "rated_at": T0 + timedelta(seconds=s)}
            for u, i, r, s in zip(
                self.rating_user.tolist(),
                self.rating_image.tolist(),
                self.rating_value.tolist(),
                self.rating_seconds.tolist(),
                strict=True,
            )
        )
        image_tags = (
            {"image_id": i, "tagger_model_id": 1, "tag_id": t, "score": s}
            for i, t, s in zip(self.tag_image.tolist(), self.tag_id.tolist(), self.tag_score.tolist(), strict=True)
        )
        return {
            "users": [{"id": k + 1, "name": shape.user_name(k)} for k in range(shape.users)],
            "images": images(),
            "tags": [{"id": r, "name": shape.tag_name(r)} for r in range(1, shape.tags + 1)],
            "tagger_models": [{"id": 1, "model_id": "bench-tagger", "threshold": THRESHOLD}],
            "ratings": ratings,
            "image_taggings": ({"image_id": i, "tagger_model_id": 1} for i in range(1, shape.images + 1)),
            "image_tags": image_tags,
        }


def generate(shape: DatasetShape) -> Dataset:
    """The dataset of ``shape`` (module doc), the same for the same shape."""
    rng = np.random.default_rng(shape.seed)
    created = np.sort(rng.integers(0, SPAN_SECONDS, shape.images))

    users, images, values, seconds = [], [], [], []
    for user, count in enumerate(shape.ratings_per_user(), start=1):
        chosen = rng.choice(shape.images, size=count, replace=False)
        after = created[chosen]
        users.append(np.full(count, user))
        images.append(chosen + 1)
        values.append(np.round(rng.random(count), 3))
        seconds.append(after + (rng.random(count) * (SPAN_SECONDS + 86_400 - after)).astype(np.int64))

    tag_image, tag_id, tag_score = _image_tags(rng, shape)
    return Dataset(
        shape,
        created,
        np.concatenate(users),
        np.concatenate(images),
        np.concatenate(values),
        np.concatenate(seconds),
        tag_image,
        tag_id,
        tag_score,
    )


def _image_tags(rng: np.random.Generator, shape: DatasetShape) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image, distinct tags drawn by popularity without replacement: the
    first few distinct draws are above the threshold, the next ones below."""
    cdf = np.cumsum(shape.tag_popularity())
    cdf[-1] = 1.0
    above = rng.integers(
        shape.tags_per_image - TAG_COUNT_SPREAD, shape.tags_per_image + TAG_COUNT_SPREAD + 1, shape.images
    )
    wanted = above + BELOW_THRESHOLD_TAGS
    # Draws with replacement, keeping the first distinct ones in draw order
    # (the same as drawing without replacement); this many draws yield enough
    # distinct tags for nearly every image even with the common ones repeating.
    draws = 4 * int(wanted.max())
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    chunk = 10_000
    for start in range(0, shape.images, chunk):
        stop = min(start + chunk, shape.images)
        sample = np.searchsorted(cdf, rng.random((stop - start, draws)), side="right") + 1
        order = np.argsort(sample, axis=1, kind="stable")
        in_order = np.take_along_axis(sample, order, axis=1)
        first_sorted = np.ones_like(in_order, dtype=bool)
        first_sorted[:, 1:] = in_order[:, 1:] != in_order[:, :-1]
        first = np.empty_like(first_sorted)
        np.put_along_axis(first, order, first_sorted, axis=1)
        position = np.cumsum(first, axis=1)  # 1-based rank among the distinct draws so far
        rows, cols = np.nonzero(first & (position <= wanted[start:stop, None]))
        is_above = position[rows, cols] <= above[start + rows]
        scores = np.where(
            is_above,
            THRESHOLD + rng.random(rows.size) * (1 - THRESHOLD),
            0.05 + rng.random(rows.size) * (THRESHOLD - 0.05),
        )
        parts.append((rows + start + 1, sample[rows, cols], np.round(scores, 4)))
    return tuple(np.concatenate(column) for column in zip(*parts, strict=True))  # type: ignore[return-value]


def load(url: str, dataset: Dataset) -> float:
    """Migrates the (empty) database at ``url`` and bulk-loads ``dataset``;
    returns the seconds it took."""
    start = time.perf_counter()
    engine = create_db_engine(url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        bulk_load(engine, **dataset.tables())
    finally:
        engine.dispose()
    return time.perf_counter() - start


@dataclass
class Generation:
    """Where a database came from, for the report."""

    database: str
    url: str
    seconds: float = 0.0
    cached: bool = False


class DatasetGenerator:
    """Generates the dataset at most once per run, whatever databases need it."""

    def __init__(self, shape: DatasetShape) -> None:
        self.shape = shape
        self._dataset: Dataset | None = None
        self.seconds = 0.0

    def dataset(self) -> Dataset:
        if self._dataset is None:
            start = time.perf_counter()
            self._dataset = generate(self.shape)
            self.seconds = time.perf_counter() - start
        return self._dataset


def sqlite_database(generator: DatasetGenerator, cache_dir: Path) -> Generation:
    """The cached SQLite file of this shape, generated first when missing.
    It is written under a temporary name and renamed when complete, so an
    interrupted run never leaves a half-loaded file to be reused."""
    path = cache_dir / f"{generator.shape.key}.db"
    url = f"sqlite:///{path}"
    if path.exists():
        return Generation("sqlite", url, cached=True)
    partial = path.with_name(f"{path.stem}.partial.db")
    for leftover in partial.parent.glob(f"{partial.name}*"):
        leftover.unlink()
    seconds = load(f"sqlite:///{partial}", generator.dataset())
    # Every connection is closed, so the WAL is checkpointed into the file and gone.
    os.replace(partial, path)
    return Generation("sqlite", url, seconds)


@contextlib.contextmanager
def postgres_database(generator: DatasetGenerator, admin_url: str) -> Iterator[Generation]:
    """A fresh PostgreSQL database with the dataset loaded, dropped afterwards."""
    name = f"tagrate_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
        yield Generation("postgresql", url, load(url, generator.dataset()))
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- the services ----------------------------------------------------------------


@dataclass
class Stack:
    """The dataset service and the gateway in front of it, as processes."""

    dataset: ServiceProcess
    dataset_addr: str
    gateway: subprocess.Popen
    gateway_url: str
    gateway_log: Path

    def stop(self) -> None:
        if self.gateway.poll() is None:
            self.gateway.terminate()
            try:
                self.gateway.wait(30)
            except subprocess.TimeoutExpired:
                self.gateway.kill()
                self.gateway.wait(10)
        if self.dataset.proc is not None and self.dataset.proc.poll() is None:
            self.dataset.terminate()


def start_stack(database_url: str, work_dir: Path) -> Stack:
    """Starts the dataset service on ``database_url`` and a gateway that
    routes to it (no other backends); returns once both answer."""
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    dataset_port = free_port()
    addr = f"127.0.0.1:{dataset_port}"
    dataset_env = {
        "DATASET_HOST": "127.0.0.1",
        "DATASET_PORT": str(dataset_port),
        "DATASET_METRICS_PORT": "0",
        "DATABASE_URL": database_url,
        "TAGRATE_DATA_DIR": str(data_dir),
    }
    dataset = ServiceProcess("tagrate_dataset", dataset_env, work_dir / "dataset.log", addr).start(timeout=120)

    gateway_port = free_port()
    gateway_env = {
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_DATASET_ADDR": addr,
        "GATEWAY_TAGGER_ADDR": "",
        "GATEWAY_RATER_ADDR": "",
        "GATEWAY_TRAINER_ADDR": "",
        "TAGRATE_DATA_DIR": str(data_dir),
    }
    log_path = work_dir / "gateway.log"
    with open(log_path, "ab") as log:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "tagrate_gateway"],
            env={**os.environ, **gateway_env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
        )
    stack = Stack(dataset, addr, gateway, f"http://127.0.0.1:{gateway_port}", log_path)
    try:
        _wait_for_http(stack, f"{stack.gateway_url}/healthz")
    except BaseException:
        stack.stop()
        raise
    return stack


def _wait_for_http(stack: Stack, url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.gateway.poll() is not None:
            raise RuntimeError(f"the gateway exited with {stack.gateway.returncode}:\n{_tail(stack.gateway_log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"the gateway did not answer within {timeout}s:\n{_tail(stack.gateway_log)}")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


# -- the workload -----------------------------------------------------------------


@dataclass(frozen=True)
class UserDataQuery:
    """One /getuserdata request, which can also be sent as the GetUserData RPC."""

    user: str
    page: int
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rated: str = "yes"

    def http_params(self) -> dict[str, str]:
        params = {"user": self.user, "page": str(self.page)}
        if self.include or self.exclude:
            params["filters"] = ",".join([*self.include, *(f"-{tag}" for tag in self.exclude)])
        if self.rated != "yes":
            params["rated"] = self.rated
        return params

    def rpc_request(self) -> library_pb2.GetUserDataRequest:
        """What the gateway sends for :meth:`http_params` (its defaults spelled out)."""
        rated = {"yes": library_pb2.RATED_FILTER_YES, "no": library_pb2.RATED_FILTER_NO}[self.rated]
        return library_pb2.GetUserDataRequest(
            user=self.user,
            include_tags=self.include,
            exclude_tags=self.exclude,
            sort=library_pb2.SORT_ORDER_DATE_DESC,
            rated=rated,
            page=self.page,
            limit=PAGE_SIZE,
        )


def workload(shape: DatasetShape, scenario: str, count: int, seed: int) -> list[UserDataQuery]:
    """``count`` requests of one scenario: random users, pages within the
    first 20 (or 3 for 2-tag filters, which match few images), filter tags
    drawn by popularity."""
    rng = random.Random(f"{shape.seed}:{scenario}:{seed}")
    per_user = shape.ratings_per_user()
    popularity = shape.tag_popularity().tolist()
    ranks = range(1, shape.tags + 1)
    queries = []
    for _ in range(count):
        index = rng.randrange(shape.users)
        user = shape.user_name(index)
        if scenario == UNFILTERED:
            pages = max(1, -(-per_user[index] // PAGE_SIZE))
            queries.append(UserDataQuery(user, rng.randint(1, min(20, pages))))
        elif scenario == FILTERED:
            first, second = rng.choices(ranks, popularity, k=1)[0], None
            while second is None or second == first:
                second = rng.choices(ranks, popularity, k=1)[0]
            tags = (shape.tag_name(first), shape.tag_name(second))
            queries.append(UserDataQuery(user, rng.randint(1, 3), include=tags))
        elif scenario == EXCLUDED:
            tag = shape.tag_name(rng.choices(ranks, popularity, k=1)[0])
            queries.append(UserDataQuery(user, rng.randint(1, 10), exclude=(tag,)))
        elif scenario == UNRATED:
            queries.append(UserDataQuery(user, rng.randint(1, 20), rated="no"))
        else:
            raise ValueError(f"unknown scenario {scenario!r}")
    return queries


@dataclass
class Measured:
    database: str
    scenario: str
    stats: Stats
    median_total: float  # matching images per request (the work behind a page)
    first_error: str = ""


@dataclass
class Overhead:
    """Latencies of the same requests by three paths, at concurrency 1."""

    database: str
    direct_p50_ms: float  # GetUserData straight to the dataset service
    httpx_p50_ms: float  # /getuserdata through the gateway, httpx client
    raw_p50_ms: float  # /getuserdata through the gateway, minimal client
    httpx_overhead_ms: float  # median over requests of (httpx - direct) for the same request
    raw_overhead_ms: float  # median over requests of (minimal - direct)
    healthz_httpx_ms: float  # /healthz (no backend call): the HTTP round trip alone
    healthz_raw_ms: float


@dataclass
class Recorder:
    """What the calls of one measurement saw besides their latency."""

    totals: list[int] = field(default_factory=list)
    first_error: str = ""

    def fail(self, message: str) -> None:
        self.first_error = self.first_error or message
        raise RuntimeError(message)


async def gateway_call(http: httpx.AsyncClient, query: UserDataQuery, recorder: Recorder) -> None:
    response = await http.get("/getuserdata", params=query.http_params())
    if response.status_code != 200:
        recorder.fail(f"{response.status_code} {response.text[:200]}")
    recorder.totals.append(response.json()["total"])


async def bench_database(stack: Stack, generation: Generation, shape: DatasetShape, calls: int) -> list[Measured]:
    """Every scenario at every concurrency through the gateway."""
    results = []
    limits = httpx.Limits(max_connections=max(CONCURRENCIES), max_keepalive_connections=max(CONCURRENCIES))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60, limits=limits) as http:
        for scenario in SCENARIOS:
            for concurrency in CONCURRENCIES:
                queries = workload(shape, scenario, calls, seed=concurrency)
                recorder = Recorder()

                async def call(i: int, queries: list[UserDataQuery] = queries, recorder: Recorder = recorder) -> None:
                    await gateway_call(http, queries[i % len(queries)], recorder)

                stats = await measure(call, calls, concurrency)
                measured = Measured(generation.database, scenario, stats, median(recorder.totals), recorder.first_error)
                results.append(measured)
                print(
                    f"  {generation.database:<10} {scenario:<20} c={concurrency}: p50 {stats.p50_ms:.1f} ms, "
                    f"{stats.per_second:.0f} req/s, {stats.errors} errors",
                    flush=True,
                )
    return results


async def bench_overhead(stack: Stack, generation: Generation, shape: DatasetShape, calls: int) -> Overhead:
    """The same unfiltered-page requests straight to the dataset service and
    through the gateway (with httpx and with a minimal client), at
    concurrency 1. Each request goes by every path back to back, in rotating
    order, so the overhead is a paired difference: the query's own cost and
    the machine's drift cancel out."""
    queries = workload(shape, UNFILTERED, calls, seed=0)
    targets = [f"/getuserdata?{urlencode(q.http_params())}" for q in queries]
    direct = AsyncBackend("dataset", stack.dataset_addr, DatasetStubs, 60, 64 << 20)
    port = int(stack.gateway_url.rsplit(":", 1)[1])
    raw = KeepAliveHttp("127.0.0.1", port)
    try:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:

            async def by_direct(i: int) -> list[str]:
                reply = await direct.stub.library.GetUserData(queries[i].rpc_request())
                return [item.image for item in reply.images]

            async def by_httpx(i: int) -> list[str]:
                response = await http.get(targets[i])
                response.raise_for_status()
                return [item["image"] for item in response.json()["images"]]

            async def by_raw(i: int) -> list[str]:
                status, body = await raw.get(targets[i])
                if status != 200:
                    raise RuntimeError(f"{status} {body[:200]!r}")
                return [item["image"] for item in json.loads(body)["images"]]

            paths = (by_direct, by_httpx, by_raw)
            # Every path must give the same answer, or the comparison means nothing.
            answers = [await path(0) for path in paths]
            if answers[1:] != answers[:1] * 2 or not answers[0]:
                raise RuntimeError("the gateway and the direct RPC disagree on the same request")

            times: dict[object, list[float]] = {path: [] for path in paths}
            for i in range(calls):
                for shift in range(len(paths)):
                    path = paths[(i + shift) % len(paths)]
                    start = time.perf_counter()
                    await path(i)
                    times[path].append((time.perf_counter() - start) * 1000)

            async def healthz_httpx(i: int) -> None:
                (await http.get("/healthz")).raise_for_status()

            async def healthz_raw(i: int) -> None:
                await raw.get("/healthz")

            healthz = [(await measure(call, calls, 1)).p50_ms for call in (healthz_httpx, healthz_raw)]
    finally:
        await direct.close()
        await raw.close()

    def paired(path: object) -> float:
        return median([t - d for t, d in zip(times[path], times[by_direct], strict=True)])

    return Overhead(
        generation.database,
        median(times[by_direct]),
        median(times[by_httpx]),
        median(times[by_raw]),
        paired(by_httpx),
        paired(by_raw),
        *healthz,
    )


# -- the report -------------------------------------------------------------------


def report(
    shape: DatasetShape, generations: list[Generation], measured: list[Measured], overhead: list[Overhead]
) -> bool:
    """Prints the tables; True when every request succeeded."""
    print_table(
        "Dataset",
        ["database", "images", "users", "ratings", "tags", "tags/image", "loaded in s", "source"],
        [
            [g.database, shape.images, shape.users, shape.ratings, shape.tags, f"~{shape.tags_per_image}",
             g.seconds, "cached file" if g.cached else "generated"]
            for g in generations
        ],
    )  # fmt: skip
    rows = []
    for m in measured:
        target, verdict = "", ""
        if m.scenario == FILTERED and m.stats.concurrency == 1:
            target = f"p50 < {TARGET_FILTERED_P50_MS:.0f} ms"
            verdict = "met" if m.stats.p50_ms < TARGET_FILTERED_P50_MS else "MISSED"
        rows.append(
            [m.database, m.scenario, m.stats.concurrency, m.stats.calls, m.stats.p50_ms, m.stats.p95_ms,
             m.stats.per_second, m.median_total, m.stats.errors, target, verdict]
        )  # fmt: skip
    print_table(
        f"GET /getuserdata through the gateway (pages of {PAGE_SIZE}, sort date-desc)",
        ["database", "request", "conc.", "calls", "p50 ms", "p95 ms", "req/s", "median matches", "errors",
         "target", ""],
        rows,
    )  # fmt: skip
    rows = []
    for o in overhead:
        verdict = "met" if o.raw_overhead_ms < TARGET_OVERHEAD_P50_MS else "MISSED"
        rows.append(
            [o.database, "minimal HTTP/1.1", o.direct_p50_ms, o.raw_p50_ms, o.raw_overhead_ms, o.healthz_raw_ms,
             f"< {TARGET_OVERHEAD_P50_MS:.0f} ms", verdict]
        )  # fmt: skip
        rows.append(
            [o.database, "httpx", o.direct_p50_ms, o.httpx_p50_ms, o.httpx_overhead_ms, o.healthz_httpx_ms,
             "(client's cost included)", ""]
        )  # fmt: skip
    print_table(
        "Gateway overhead: the same unfiltered-page requests direct (GetUserData over grpc.aio) and through the "
        "gateway, concurrency 1; overhead = median over requests of (gateway - direct)",
        ["database", "client", "direct p50 ms", "gateway p50 ms", "overhead ms", "/healthz p50 ms", "target", ""],
        rows,
    )
    failed = [m for m in measured if m.stats.errors]
    for m in failed:
        print(f"\n{m.database} {m.scenario} c={m.stats.concurrency}: {m.stats.errors} failed, e.g. {m.first_error}")
    return not failed


def parse_dataset_args(
    prog: str, description: str, argv: list[str] | None, full_calls: int = FULL_CALLS, quick_calls: int = QUICK_CALLS
) -> tuple[argparse.Namespace, DatasetShape, DatasetGenerator, tuple[str, ...]]:
    """The options every benchmark on the 100k-image dataset shares (which
    databases, calls per measurement, scale, cache folder); prints the
    run's header line. Returns the options, the dataset's shape and
    generator, and the databases to run on."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--db", choices=("sqlite", "postgresql", "both"), default="both", help="Default: both.")
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help=f"Requests per measurement (default {full_calls}, or {quick_calls} with a --scale below 1).",
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="Fraction of the full dataset's images and ratings (default 1)."
    )
    parser.add_argument("--cache-dir", type=Path, default=RESULTS_DIR, help="Where the SQLite file is cached.")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="A PostgreSQL database to create others from.")
    args = parser.parse_args(argv or [])
    if args.calls is None:
        args.calls = full_calls if args.scale >= 1 else quick_calls
    if args.calls < 1 or not 0 < args.scale <= 1:
        parser.error("--calls must be 1 or more and --scale in (0, 1]")
    shape = DatasetShape().scaled(args.scale)
    databases = ("sqlite", "postgresql") if args.db == "both" else (args.db,)
    print(f"{os.cpu_count()} cores; {shape}; {args.calls} calls per measurement", flush=True)
    return args, shape, DatasetGenerator(shape), databases


def main(argv: list[str] | None = None) -> int:
    if argv and "--floor" in argv:  # each query shape against its hand-written SQL floor
        from . import userdata_floor

        return userdata_floor.main([arg for arg in argv if arg != "--floor"])
    args, shape, generator, databases = parse_dataset_args("python -m bench userdata", __doc__.split("\n\n")[0], argv)
    generations: list[Generation] = []
    measured: list[Measured] = []
    overhead: list[Overhead] = []
    loads: list[str] = []
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-userdata-") as tmp:
        for database in databases:
            with contextlib.ExitStack() as cleanup:
                print(f"{database}: preparing the database", flush=True)
                if database == "sqlite":
                    generation = sqlite_database(generator, args.cache_dir)
                else:
                    generation = cleanup.enter_context(postgres_database(generator, args.pg_admin_url))
                generations.append(generation)
                stack = start_stack(generation.url, Path(tmp) / database)
                cleanup.callback(stack.stop)
                load_before = os.getloadavg()[0]
                measured += asyncio.run(bench_database(stack, generation, shape, args.calls))
                overhead.append(asyncio.run(bench_overhead(stack, generation, shape, args.calls)))
                # Other work on the machine shows in every figure; say how much there was.
                loads.append(f"{database} {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    if generator.seconds:
        print(f"\ngenerating the rows took {generator.seconds:.1f} s, before loading")
    print(f"1-minute load average on {os.cpu_count()} cores, before -> after measuring: {'; '.join(loads)}")
    return 0 if report(shape, generations, measured, overhead) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
