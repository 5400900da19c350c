"""Both ways measured request by request: the floor statements through the
driver, /getuserdata through the gateway, and their pages compared."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..harness import KeepAliveHttp
from ..harness.dataset import DatasetShape, Generation, load, postgres_database, sqlite_database
from .shapes import RATIO, SHAPES, SLACK_MS, STRICT_RATIO, STRICT_SLACK_MS, VERSION, Request, Shape, requests_for
from .statements import Ids, candidates


class Floor:
    """One driver connection that runs hand-written statements."""

    def __init__(self, url: str) -> None:
        self.db = "sqlite" if url.startswith("sqlite") else "postgresql"
        if self.db == "sqlite":
            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        else:
            # psycopg's defaults, as the service's connections have them
            # (statements run five times are prepared).
            self.conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def run(self, sql: str, params: dict[str, Any]) -> tuple[list[str], int]:
        rows = self.conn.execute(sql, params).fetchall()
        return [row[0] for row in rows], (rows[0][5] if rows else -1)

    def ids(self, shape: DatasetShape) -> Ids:
        q = self.conn.execute
        users = dict(q("SELECT name, id FROM users").fetchall())
        tags = dict(q("SELECT name, id FROM tags").fetchall())
        model, threshold = q("SELECT id, threshold FROM tagger_models ORDER BY id DESC LIMIT 1").fetchone()
        images = q("SELECT count(*) FROM images").fetchone()[0]
        ratings = dict(q("SELECT user_id, count(*) FROM ratings GROUP BY user_id").fetchall())
        frequency = dict(
            q(
                f"SELECT tag_id, count(*) FROM image_tags WHERE tagger_model_id = {int(model)} "
                f"AND score >= {float(threshold)} GROUP BY tag_id"
            ).fetchall()
        )
        return Ids(users, tags, model, threshold, images, ratings, frequency)

    def close(self) -> None:
        self.conn.close()


def add_predictions(url: str) -> None:
    """A current prediction of every image for every user (scores spread
    over [0, 1), deterministic) and a trained snapshot naming their version."""
    floor = Floor(url)
    at = "2026-01-01 00:00:00.000000" if floor.db == "sqlite" else "2026-01-01 00:00:00+00"
    sql = [
        "INSERT INTO trained_snapshots (subject, snapshot_id, ratings_count, model_version, trained_at) "
        f"SELECT name, 'snap', 0, '{VERSION}', '{at}' FROM users",
        "INSERT INTO predictions (user_id, image_id, score, model_version, predicted_by, scored_at) "
        "SELECT u.id, i.id, ((i.id * 7919 + u.id * 104729) % 100003) / 100003.0, "
        f"'{VERSION}', 'personal', '{at}' FROM users u CROSS JOIN images i",
    ]
    try:
        if floor.conn.execute("SELECT count(*) FROM predictions").fetchone()[0]:
            return
        for statement in sql:
            floor.conn.execute(statement)
        if floor.db == "postgresql":
            floor.conn.execute("VACUUM ANALYZE")
    finally:
        floor.close()


@dataclass
class Result:
    database: str
    shape: str
    api: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)
    statement: str = ""

    @property
    def api_p50(self) -> float:
        return statistics.median(self.api)

    @property
    def floor_p50(self) -> float:
        return statistics.median(self.floor)

    @property
    def allowance(self) -> float:
        return RATIO * self.floor_p50 + SLACK_MS

    @property
    def met(self) -> bool:
        return self.api_p50 <= self.allowance

    @property
    def strict_allowance(self) -> float:
        return STRICT_RATIO * self.floor_p50 + STRICT_SLACK_MS

    @property
    def strict_met(self) -> bool:
        return self.api_p50 <= self.strict_allowance


def timed(call: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = call(*args)
    return (time.perf_counter() - start) * 1000, value


async def bench_shape(
    shape: Shape, requests: list[Request], ids: Ids, floor: Floor, http: KeepAliveHttp, database: str
) -> Result:
    result = Result(database, shape.name)

    async def api(request: Request) -> tuple[list[str], int]:
        status, body = await http.get(request.target())
        if status != 200:
            raise RuntimeError(f"{request.target()}: {status} {body[:300]!r}")
        reply = json.loads(body)
        return [item["image"] for item in reply["images"]], reply["total"]

    # The floor: per request, the fastest of the equivalent statements in a
    # trial (each run twice, the second timed), as if written for it.
    chosen: list[int] = []
    for request in requests:
        options = candidates(shape, request, ids, floor.db)
        if len(options) == 1:
            chosen.append(0)
            continue
        trial = []
        for sql, params in options:
            floor.run(sql, params)
            trial.append(timed(floor.run, sql, params)[0])
        chosen.append(trial.index(min(trial)))
    result.statement = f"{len(candidates(shape, requests[0], ids, floor.db))} written"
    for request in requests[:3]:  # warm-up
        await api(request)
    for i, request in enumerate(requests):
        sql, params = candidates(shape, request, ids, floor.db)[chosen[i]]
        if i % 2:
            floor_ms, (floor_names, floor_total) = timed(floor.run, sql, params)
        start = time.perf_counter()
        names, total = await api(request)
        api_ms = (time.perf_counter() - start) * 1000
        if not i % 2:
            floor_ms, (floor_names, floor_total) = timed(floor.run, sql, params)
        if names != floor_names or (floor_names and total != floor_total):
            raise AssertionError(
                f"{database} {shape.name} {request.target()}: the API and the floor statement disagree "
                f"(total {total} vs {floor_total}; first names {names[:3]} vs {floor_names[:3]})"
            )
        result.api.append(api_ms)
        result.floor.append(floor_ms)
    return result


async def bench_database(url: str, gateway_url: str, database: str, dataset: DatasetShape, calls: int) -> list[Result]:
    floor = Floor(url)
    port = int(gateway_url.rsplit(":", 1)[1])
    http = KeepAliveHttp("127.0.0.1", port)
    try:
        ids = floor.ids(dataset)
        results = []
        for shape in SHAPES:
            result = await bench_shape(shape, requests_for(shape, dataset, calls), ids, floor, http, database)
            print(
                f"  {database:<10} {shape.name:<26} tagrate {result.api_p50:6.1f} ms  floor {result.floor_p50:6.1f} "
                f"ms  {'met' if result.met else 'MISSED'}  strict {'met' if result.strict_met else 'MISSED'}",
                flush=True,
            )
            results.append(result)
        return results
    finally:
        await http.close()
        floor.close()


@contextlib.contextmanager
def prepared(database: str, generator: Any, args: Any, tmp: Path) -> Iterator[Generation]:
    if database == "sqlite":
        cached = sqlite_database(generator, args.cache_dir)
        path = tmp / "floor.db"
        shutil.copyfile(cached.url.removeprefix("sqlite:///"), path)  # predictions must not change the cache
        generation = Generation("sqlite", f"sqlite:///{path}", cached.seconds, cached.cached)
        add_predictions(generation.url)
        yield generation
    elif args.keep_pg:
        # A named database, loaded once and kept for the next run.
        url = f"{args.pg_admin_url.rsplit('/', 1)[0]}/{args.keep_pg}"
        with psycopg.connect(args.pg_admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (args.keep_pg,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{args.keep_pg}"')
        seconds = 0.0 if exists else load(url, generator.dataset())
        add_predictions(url)
        yield Generation("postgresql", url, seconds, bool(exists))
    else:
        with postgres_database(generator, args.pg_admin_url) as generation:
            add_predictions(generation.url)
            yield generation
