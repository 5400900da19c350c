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
statement for it, interleaved (``bench/userdata_floor/``; ``bench/__main__.py``
runs it for this flag).

Targets (issue 2): p50 of a 2-tag filtered page under 50 ms on both
databases (judged at concurrency 1), gateway overhead under 3 ms p50.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx

from tagrate_common.dataset_stubs import DatasetStubs
from tagrate_common.grpc_client import AsyncBackend

from .harness import KeepAliveHttp, Stats, measure, median, print_table
from .harness.dataset import DatasetShape, Generation, parse_dataset_args, postgres_database, sqlite_database
from .harness.dataset_stack import Stack, start_stack
from .harness.workload import FILTERED, PAGE_SIZE, SCENARIOS, UNFILTERED, UserDataQuery, workload

TARGET_FILTERED_P50_MS = 50.0
TARGET_OVERHEAD_P50_MS = 3.0
CONCURRENCIES = (1, 8)


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


def main(argv: list[str] | None = None) -> int:
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
