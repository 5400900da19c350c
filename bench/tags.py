"""Filters of tags people own at the 100k bench library: ``python -m bench
tags [--db sqlite|postgresql|both] [--calls N] [--scale F]``.

The library of ``python -m bench userdata`` (100,000 images, 20 users,
500,000 ratings, 2,000 Zipf-distributed tags; the SQLite file is shared
with it, copied so it stays as it was) plus, written straight into the
database: for each first tag ``a`` of the plain pages, a tag ``parent_a``
implied by ``a`` and by four rare tags (the closure ``tag_implied`` as the
dataset service writes it), 2,000 manual tags, and every user's
predictions by a serving model version.

Then the real dataset service and gateway (their own processes) answer, at
concurrency 1, interleaved round by round (each round: one request of each
kind, for the same user, page and tags): the plain 2-tag filtered
page of ``bench userdata`` (two tags drawn by popularity), the same page
with the first tag replaced by its ``parent_a`` (matching the same images
and the rare tags', through the implications, from three sources), with a ``rating:>=0.3,rating:<0.8``
range added, and with ``predicted:>=0.5`` added. Target (issue 25): each
within 1.5x of the plain page's p50.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tagrate_common.database import normalise_url

from .harness import print_table
from .harness.dataset import DatasetShape, Generation, parse_dataset_args, postgres_database, sqlite_database
from .harness.dataset_stack import start_stack

TARGET_RATIO = 1.5
PAGE_SIZE = 60
# Each round's first tag ``a`` gets a parent ``parent_<a>`` implied by ``a``
# and by four rare tags: filtering by the parent matches what filtering by
# ``a`` matches (plus the rare tags' few images), so the implied page and
# the plain page do the same work but for resolving the implication.
RARE_RANKS = (1500, 1600, 1700, 1800)
PLAIN, IMPLIED, RATING, PREDICTED = (
    "plain 2-tag page",
    "implied tag + tag",
    "2 tags + rating: range",
    "2 tags + predicted:",
)
KINDS = (PLAIN, IMPLIED, RATING, PREDICTED)


def parent(tag: str) -> str:
    return f"parent_{tag}"


def add_owned_tags(url: str, shape: DatasetShape, firsts: set[str]) -> None:
    """The implications, manual tags and predictions the filters read."""
    engine = create_engine(url)
    now = datetime.now(UTC)
    rng = random.Random(25)
    with engine.begin() as conn:
        sqlite = conn.dialect.name == "sqlite"
        stamp = now.replace(tzinfo=None).isoformat(sep=" ") if sqlite else now

        def tag_id(name: str) -> int:
            return conn.execute(text("SELECT id FROM tags WHERE name = :n"), {"n": name}).scalar_one()

        rare = [tag_id(shape.tag_name(rank)) for rank in RARE_RANKS if rank <= shape.tags]
        for first in sorted(firsts):
            conn.execute(text("INSERT INTO tags (name) VALUES (:n)"), {"n": parent(first)})
            group = tag_id(parent(first))
            for tag in [tag_id(first), *rare]:
                conn.execute(
                    text("INSERT INTO tag_implications (tag_id, implies_id, created_at) VALUES (:t, :g, :now)"),
                    {"t": tag, "g": group, "now": stamp},
                )
                conn.execute(
                    text("INSERT INTO tag_implied (tag_id, implied_id) VALUES (:t, :g)"), {"t": tag, "g": group}
                )
        images = conn.execute(text("SELECT id FROM images")).scalars().all()
        tags = conn.execute(text("SELECT id FROM tags WHERE name NOT LIKE 'parent%' LIMIT 200")).scalars().all()
        manual = {(rng.choice(images), rng.choice(tags)) for _ in range(2000)}
        conn.execute(
            text("INSERT INTO manual_tags (image_id, tag_id, added_by, added_at) VALUES (:i, :t, NULL, :now)"),
            [{"i": i, "t": t, "now": stamp} for i, t in manual],
        )
        users = conn.execute(text("SELECT id, name FROM users")).all()
        for user_id, name in users:
            conn.execute(
                text(
                    "INSERT INTO trained_snapshots (subject, snapshot_id, ratings_count, model_version, trained_at) "
                    "VALUES (:s, 'bench', 1, :v, :now)"
                ),
                {"s": name, "v": f"bench-{name}", "now": stamp},
            )
            conn.execute(
                text(
                    "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, scored_at) "
                    "SELECT :u, id, ((id * 7919) % 1000) / 1000.0, :v, 'personal', :now FROM images"
                ),
                {"u": user_id, "v": f"bench-{name}", "now": stamp},
            )
    if engine.dialect.name == "postgresql":
        # Fresh statistics for the rows just written (as after a bulk load):
        # without them PostgreSQL plans the new tables' probes blind.
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    engine.dispose()


def queries(shape: DatasetShape, count: int) -> list[dict[str, dict[str, str]]]:
    """``count`` rounds: for one random user and page, each kind's parameters."""
    rng = random.Random(f"{shape.seed}:tags")
    popularity = shape.tag_popularity().tolist()
    ranks = range(1, shape.tags + 1)
    rounds = []
    for _ in range(count):
        user = shape.user_name(rng.randrange(shape.users))
        first, second = rng.choices(ranks, popularity, k=1)[0], None
        while second is None or second == first:
            second = rng.choices(ranks, popularity, k=1)[0]
        a, b = shape.tag_name(first), shape.tag_name(second)
        base = {"user": user, "page": str(rng.randint(1, 3)), "limit": str(PAGE_SIZE)}
        rounds.append(
            {
                PLAIN: {**base, "filters": f"{a},{b}"},
                IMPLIED: {**base, "filters": f"{parent(a)},{b}"},
                RATING: {**base, "filters": f"{a},{b},rating:>=0.3,rating:<0.8"},
                PREDICTED: {**base, "filters": f"{a},{b},predicted:>=0.5"},
            }
        )
    return rounds


async def bench(gateway_url: str, shape: DatasetShape, calls: int) -> dict[str, tuple[list[float], float, int]]:
    """Each round's requests one after another, kind by kind (so load that
    comes and goes weighs on every kind alike): per kind, the latencies in
    ms, the median total and the errors."""
    rounds = queries(shape, calls)
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    totals: dict[str, list[int]] = {kind: [] for kind in KINDS}
    errors = dict.fromkeys(KINDS, 0)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=120) as http:
        for n, round_ in enumerate([*rounds[:WARMUP], *rounds]):
            for kind in KINDS:
                start = time.perf_counter()
                response = await http.get("/getuserdata", params=round_[kind])
                elapsed = (time.perf_counter() - start) * 1000
                if n < WARMUP:
                    continue
                if response.status_code != 200:
                    errors[kind] += 1
                    print(f"  {kind}: {response.status_code} {response.text[:200]}", flush=True)
                    continue
                latencies[kind].append(elapsed)
                totals[kind].append(response.json()["total"])
    return {kind: (latencies[kind], statistics.median(totals[kind] or [0]), errors[kind]) for kind in KINDS}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


WARMUP = 5


def main(argv: list[str] | None = None) -> int:
    args, shape, generator, databases = parse_dataset_args("python -m bench tags", __doc__.split("\n\n")[0], argv)
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-tags-") as tmp:
        for database in databases:
            with contextlib.ExitStack() as cleanup:
                print(f"{database}: preparing the database", flush=True)
                if database == "sqlite":
                    cached = sqlite_database(generator, args.cache_dir)
                    copy = Path(tmp) / "tags.db"
                    shutil.copyfile(cached.url.removeprefix("sqlite:///"), copy)
                    generation = Generation("sqlite", f"sqlite:///{copy}", cached=True)
                else:
                    generation = cleanup.enter_context(postgres_database(generator, args.pg_admin_url))
                start = time.perf_counter()
                stack = start_stack(generation.url, Path(tmp) / database)  # migrates to the head
                cleanup.callback(stack.stop)
                firsts = {r[PLAIN]["filters"].split(",")[0] for r in queries(shape, args.calls)}
                add_owned_tags(normalise_url(generation.url), shape, firsts)
                print(f"  owned tags and predictions written in {time.perf_counter() - start:.1f} s", flush=True)
                load_before = os.getloadavg()[0]
                results = asyncio.run(bench(stack.gateway_url, shape, args.calls))
                load = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
                plain = percentile(results[PLAIN][0], 0.5)
                for kind in KINDS:
                    values, total, failed = results[kind]
                    p50 = percentile(values, 0.5)
                    ratio = p50 / plain if plain else float("nan")
                    if failed or (kind != PLAIN and ratio > TARGET_RATIO):
                        ok = False
                    rows.append(
                        [database, kind, f"{p50:.1f}", f"{percentile(values, 0.95):.1f}", f"{ratio:.2f}", total,
                         failed, load]
                    )  # fmt: skip
    print_table(
        f"/getuserdata filters of tags people own ({shape}); target: each within {TARGET_RATIO}x the plain page",
        ["database", "page", "p50 ms", "p95 ms", "x plain", "median total", "errors", "load (1 min) before -> after"],
        rows,
    )
    print(f"{os.cpu_count()} cores")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
