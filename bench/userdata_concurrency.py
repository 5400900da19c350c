"""/getuserdata's 2-tag filters under concurrency, beside today's statements:
``python -m bench userdata --concurrency [--db sqlite|postgresql|both]
[--calls N] [--scale F] [--url URL]`` (issue 28; ``--url``: an already
loaded bench database rather than a generated one).

On the bench dataset (``bench/userdata.py``), two dataset services (each
with its gateway) serve the same database: one answers tag filters from
``tag_members`` and counts them from in-memory bitsets (the default), the
other reads the source tables as before (``DATASET_TAG_MEMBERS=false``).
First every request of the mix goes to both and their answers (pages and
totals) must be equal. Then, at concurrency 1, 8 and 32, the mix is sent
to one and then the other, alternating which goes first, in rounds, so
both see the same machine: req/s, p50 and p99 of each, and their ratio.

The mix: the 2-tag filtered pages of ``bench userdata`` (both tags drawn by
popularity, as people filter by the tags they see: so the generator's share
of dense, medium and rare pairs; rated=yes, pages 1-3 of 60). Its dense
pairs (both tags on more than 5,000 images) are also measured alone at
concurrency 1.

Targets: a page of two dense tags with its total, p50 under 20 ms at
concurrency 1; the mix's throughput at concurrency 8 at least 5 times
today's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg

from .harness import Stats, measure, print_table
from .harness.dataset import (
    DatasetShape,
    Generation,
    parse_dataset_args,
    postgres_database,
    sqlite_database,
)
from .harness.dataset_stack import Stack, start_stack
from .harness.workload import FILTERED, UserDataQuery, workload

CONCURRENCIES = (1, 8, 32)
ROUNDS = 2  # each measurement split in rounds, the two services alternating
DENSE = 5000  # images a tag is on, for a pair to count as dense
TARGET_DENSE_P50_MS = 20.0
TARGET_SPEEDUP_C8 = 5.0
PATHS = ("tag_members", "today")


@dataclass
class Row:
    database: str
    workload: str
    concurrency: int
    stats: dict[str, list[Stats]]  # path -> its rounds

    def per_second(self, path: str) -> float:
        rounds = self.stats[path]
        return sum(s.calls for s in rounds) / sum(s.seconds for s in rounds)

    def p(self, path: str, which: str) -> float:
        """The rounds' median p50 or worst p99."""
        rounds = self.stats[path]
        if which == "p50":
            return sorted(s.p50_ms for s in rounds)[len(rounds) // 2]
        return max(s.p99_ms for s in rounds)


def _frequencies(url: str) -> dict[str, int]:
    """Images per tag name, as the model tagged them (the bench has no other source)."""
    sql = (
        "SELECT t.name, count(*) FROM image_tags x JOIN tags t ON t.id = x.tag_id "
        "JOIN tagger_models m ON m.id = x.tagger_model_id WHERE x.score >= m.threshold GROUP BY t.name"
    )
    if url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return dict(conn.execute(sql).fetchall())
    with psycopg.connect(url) as conn:
        return dict(conn.execute(sql).fetchall())  # type: ignore[arg-type]


async def _answer(http: httpx.AsyncClient, query: UserDataQuery) -> tuple[list[str], int]:
    response = await http.get("/getuserdata", params=query.http_params())
    response.raise_for_status()
    body = response.json()
    return [item["image"] for item in body["images"]], body["total"]


async def bench_database(
    stacks: dict[str, Stack], database: str, url: str, shape: DatasetShape, calls: int
) -> list[Row]:
    frequency = _frequencies(url)
    mix = workload(shape, FILTERED, calls, seed=28)
    dense = [q for q in mix if min(frequency.get(tag, 0) for tag in q.include) > DENSE]
    limits = httpx.Limits(max_connections=max(CONCURRENCIES), max_keepalive_connections=max(CONCURRENCIES))
    clients = {path: httpx.AsyncClient(base_url=stacks[path].gateway_url, timeout=120, limits=limits) for path in PATHS}
    rows = []
    try:
        for query in mix:  # the same answers, or the comparison means nothing
            answers = [await _answer(clients[path], query) for path in PATHS]
            if answers[0] != answers[1]:
                raise RuntimeError(f"{database}: the two services disagree on {query}: {answers}")
        print(f"  {database}: {len(mix)} requests answered alike; {len(dense)} dense pairs", flush=True)
        plan = [("2-tag mix", mix, c) for c in CONCURRENCIES] + [("dense pairs", dense, 1)]
        for name, queries, concurrency in plan:
            if not queries:
                continue
            row = Row(database, f"{name} ({len(queries)})", concurrency, {path: [] for path in PATHS})
            per_round = max(1, len(queries) // ROUNDS)
            for n in range(ROUNDS):
                order = PATHS if n % 2 == 0 else PATHS[::-1]
                chunk = queries[n * per_round : (n + 1) * per_round] or queries
                for path in order:
                    http = clients[path]

                    async def call(i: int, http: httpx.AsyncClient = http, chunk: list = chunk) -> None:
                        (await http.get("/getuserdata", params=chunk[i % len(chunk)].http_params())).raise_for_status()

                    row.stats[path].append(await measure(call, len(chunk), concurrency, warmup=2))
            rows.append(row)
            print(
                f"  {database} {name} c={concurrency}: "
                + ", ".join(f"{p} {row.per_second(p):.1f} req/s p50 {row.p(p, 'p50'):.1f} ms" for p in PATHS),
                flush=True,
            )
    finally:
        for client in clients.values():
            await client.aclose()
    return rows


def report(rows: list[Row], loads: list[str]) -> None:
    table = []
    for r in rows:
        new, old = PATHS
        verdict = ""
        if r.workload.startswith("dense") and r.concurrency == 1:
            verdict = f"p50 < {TARGET_DENSE_P50_MS:.0f} ms: " + (
                "met" if r.p(new, "p50") < TARGET_DENSE_P50_MS else "MISSED"
            )
        elif r.concurrency == 8:
            speedup = r.per_second(new) / r.per_second(old)
            verdict = f">= {TARGET_SPEEDUP_C8:.0f}x today: " + ("met" if speedup >= TARGET_SPEEDUP_C8 else "MISSED")
        errors = sum(s.errors for path in PATHS for s in r.stats[path])
        table.append(
            [r.database, r.workload, r.concurrency, r.per_second(new), r.p(new, "p50"), r.p(new, "p99"),
             r.per_second(old), r.p(old, "p50"), r.p(old, "p99"), r.per_second(new) / r.per_second(old),
             errors, verdict]
        )  # fmt: skip
    print_table(
        "GET /getuserdata, 2-tag filters (rated=yes, pages 1-3 of 60): tag_members + bitsets beside today's "
        "statements, same database, interleaved rounds",
        ["database", "workload (requests)", "conc.", "req/s", "p50 ms", "p99 ms", "today req/s", "today p50",
         "today p99", "speed-up", "errors", "target"],
        table,
    )  # fmt: skip
    print(f"1-minute load average on {os.cpu_count()} cores, before -> after: {'; '.join(loads)}")


def _existing(argv: list[str]) -> tuple[list[str], str]:
    """``--url URL``: an already loaded bench database (of the shape the
    other options give) instead of a generated one."""
    if "--url" not in argv:
        return argv, ""
    at = argv.index("--url")
    return argv[:at] + argv[at + 2 :], argv[at + 1]


def main(argv: list[str] | None = None) -> int:
    argv, url = _existing(list(argv or []))
    args, shape, generator, databases = parse_dataset_args(
        "python -m bench userdata --concurrency", __doc__.split("\n\n")[0], argv, full_calls=96, quick_calls=48
    )
    if url:
        databases = ("sqlite" if url.startswith("sqlite") else "postgresql",)
    rows: list[Row] = []
    loads: list[str] = []
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-concurrency-") as tmp:
        for database in databases:
            with contextlib.ExitStack() as cleanup:
                print(f"{database}: preparing the database", flush=True)
                generation: Generation
                if url:
                    generation = Generation(database, url, cached=True)
                elif database == "sqlite":
                    generation = sqlite_database(generator, args.cache_dir)
                else:
                    generation = cleanup.enter_context(postgres_database(generator, args.pg_admin_url))
                stacks = {}
                for path in PATHS:
                    settings = {"DATASET_TAG_MEMBERS": "true" if path == "tag_members" else "false"}
                    # Today's dense totals take seconds on a busy machine: no 504 for them.
                    patient = {"GATEWAY_DATASET_TIMEOUT_SECONDS": "300"}
                    stacks[path] = start_stack(generation.url, Path(tmp) / database / path, settings, patient)
                    cleanup.callback(stacks[path].stop)
                before = os.getloadavg()[0]
                rows += asyncio.run(bench_database(stacks, database, generation.url, shape, args.calls))
                loads.append(f"{database} {before:.1f} -> {os.getloadavg()[0]:.1f}")
    report(rows, loads)
    return 0 if not any(s.errors for r in rows for path in PATHS for s in r.stats[path]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
