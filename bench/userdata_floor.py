"""/getuserdata against the SQL floor: ``python -m bench userdata --floor
[--db sqlite|postgresql|both] [--calls N] [--scale F]`` (also ``python -m
bench userdata_floor``).

On bench/userdata.py's dataset (100k images, 20 users, 500k ratings, 2,000
Zipf tags) plus a current prediction of every image for every user (a
trained snapshot per user, as after a publish and its rescoring), each
query shape is measured two ways in the same run, request by request,
alternating which goes first:

- tagrate: GET /getuserdata through the real gateway and dataset service
  processes (the minimal keep-alive HTTP client of ``harness.py``);
- the floor: the most efficient single hand-written SQL statement for the
  shape on that database, sent straight through the driver (psycopg /
  sqlite3, one connection, no ORM). The floor is given every id already
  resolved (user, tags, tagger model and threshold, model version) and
  returns the page's rows and the total in one statement. Several
  equivalent statements are written per shape (tag conditions as IN,
  driven by the rarest included tag, or as EXISTS probes, for the page and
  its count apart; deep pages read from the other end; rated=all as two merged
  index-ordered streams, the rated=no total as a difference of counts);
  the fastest for each request in a trial is its floor.

Every sampled request must return the same image names in the same order
and the same total both ways, or the run fails. Target per shape: tagrate's
p50 within 1.5 x floor p50 + 3 ms (concurrency 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg

from .harness import KeepAliveHttp, print_table
from .harness.dataset import DatasetShape, Generation, load, parse_dataset_args, postgres_database, sqlite_database
from .harness.dataset_stack import start_stack
from .harness.workload import PAGE_SIZE

VERSION = "bench-floor-v1"
RATIO, SLACK_MS = 1.5, 3.0


# -- the shapes ----------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    user: str
    page: int
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rated: str = "yes"
    sort: str = "date-desc"

    def target(self) -> str:
        params = {"user": self.user, "page": str(self.page), "limit": str(PAGE_SIZE)}
        if self.include or self.exclude:
            params["filters"] = ",".join([*self.include, *(f"-{t}" for t in self.exclude)])
        params["rated"], params["sort"] = self.rated, self.sort
        return f"/getuserdata?{urlencode(params)}"


@dataclass(frozen=True)
class Shape:
    name: str
    rated: str
    sort: str = "date-desc"
    include: int = 0  # how many included tags (drawn by popularity)
    exclude: int = 0
    pages: str = "first20"  # first20 | first3 | first10 | last | page1


SHAPES = (
    Shape("rated=yes page 1", "yes", pages="page1"),
    Shape("rated=yes + 2 tags", "yes", include=2, pages="first3"),
    Shape("rated=no", "no"),
    Shape("rated=no + 2 tags", "no", include=2, pages="first3"),
    Shape("rated=all", "all"),
    Shape("one -tag exclusion", "yes", exclude=1, pages="first10"),
    Shape("last page (deep)", "yes", pages="last"),
    Shape("rating-desc", "yes", sort="rating-desc"),
    Shape("predicted-desc rated=no", "no", sort="predicted-desc", pages="first10"),
    Shape("predicted-asc rated=yes", "yes", sort="predicted-asc", pages="first10"),
)


def requests_for(shape: Shape, dataset: DatasetShape, count: int) -> list[Request]:
    rng = random.Random(f"{dataset.seed}:floor:{shape.name}")
    per_user = dataset.ratings_per_user()
    popularity = dataset.tag_popularity().tolist()
    ranks = range(1, dataset.tags + 1)
    out = []
    for _ in range(count):
        index = rng.randrange(dataset.users)
        tags: list[str] = []
        while len(tags) < shape.include + shape.exclude:
            tag = dataset.tag_name(rng.choices(ranks, popularity, k=1)[0])
            if tag not in tags:
                tags.append(tag)
        include, exclude = tuple(tags[: shape.include]), tuple(tags[shape.include :])
        rows = per_user[index] if shape.rated == "yes" else dataset.images
        if shape.pages == "last":
            page = max(1, -(-rows // PAGE_SIZE))
        elif shape.pages == "page1":
            page = 1
        else:
            page = rng.randint(1, {"first20": 20, "first10": 10, "first3": 3}[shape.pages])
        out.append(Request(dataset.user_name(index), page, include, exclude, shape.rated, shape.sort))
    return out


# -- the floor statements ----------------------------------------------------------


@dataclass
class Ids:
    """Everything the floor is given resolved."""

    users: dict[str, int]
    tags: dict[str, int]
    model: int
    threshold: float
    images: int  # for the floor's own knowledge of deep pages (rated=no/all)
    ratings: dict[int, int]  # per user id
    frequency: dict[int, int]  # images per tag id (at or above the threshold)


def _tag(image: str, n: int, style: str, negate: bool = False) -> str:
    """The condition that ``image`` has (or lacks) tag parameter ``t{n}``."""
    if style == "in" and not negate:
        return (
            f"{image} IN (SELECT image_id FROM image_tags WHERE tagger_model_id = :m AND tag_id = :t{n} "
            f"AND score >= :th)"
        )
    probe = (
        f"EXISTS (SELECT 1 FROM image_tags x{n} WHERE x{n}.image_id = {image} AND x{n}.tagger_model_id = :m "
        f"AND x{n}.tag_id = :t{n} AND x{n}.score >= :th)"
    )
    return f"NOT {probe}" if negate else probe


def _tags(image: str, include: int, exclude: int, style: str) -> str:
    parts = [_tag(image, n, style) for n in range(include)]
    parts += [_tag(image, include + n, style, negate=True) for n in range(exclude)]
    return "".join(f" AND {p}" for p in parts)


PRED = "LEFT JOIN predictions p ON p.user_id = :u AND p.image_id = {img} AND p.model_version = :v"
UNRATED = "NOT EXISTS (SELECT 1 FROM ratings q WHERE q.user_id = :u AND q.image_id = {img})"


def candidates(shape: Shape, request: Request, ids: Ids, db: str) -> list[tuple[str, dict[str, Any]]]:
    """Equivalent statements for one request: (sql with :named params, params)."""
    u = ids.users[request.user]
    params: dict[str, Any] = {"u": u, "v": VERSION, "m": ids.model, "th": ids.threshold, "lim": PAGE_SIZE}
    # The rarest included tag first: the one an IN condition should drive.
    include = sorted(request.include, key=lambda tag: ids.frequency.get(ids.tags[tag], 0))
    for n, tag in enumerate((*include, *request.exclude)):
        params[f"t{n}"] = ids.tags[tag]
    offset = (request.page - 1) * PAGE_SIZE
    params["off"] = offset
    inc, exc = len(request.include), len(request.exclude)
    out = []
    styles = [(page, count) for page in ("in", "exists") for count in ("in", "exists")] if inc else [("exists",) * 2]
    for style, count_style in styles:
        if request.rated == "yes":
            count = f"(SELECT count(*) FROM ratings c WHERE c.user_id = :u{_tags('c.image_id', inc, exc, count_style)})"
            if request.sort == "predicted-asc":
                sql = (
                    f"SELECT i.name, r.rating, r.rated_at, p.score, p.predicted_by, {count} AS total "
                    f"FROM predictions p JOIN ratings r ON r.user_id = :u AND r.image_id = p.image_id "
                    f"JOIN images i ON i.id = p.image_id "
                    f"WHERE p.user_id = :u AND p.model_version = :v{_tags('p.image_id', inc, exc, style)} "
                    f"ORDER BY p.score ASC, i.name LIMIT :lim OFFSET :off"
                )
                out.append((sql, params))
                sql2 = (
                    f"SELECT i.name, r.rating, r.rated_at, p.score, p.predicted_by, {count} AS total "
                    f"FROM ratings r JOIN images i ON i.id = r.image_id {PRED.format(img='r.image_id')} "
                    f"WHERE r.user_id = :u{_tags('r.image_id', inc, exc, style)} "
                    f"ORDER BY p.score ASC, i.name LIMIT :lim OFFSET :off"
                )
                out.append((sql2, params))
                continue
            key = {"date-desc": "r.rated_at", "rating-desc": "r.rating"}[request.sort]
            body = (
                f"FROM ratings r JOIN images i ON i.id = r.image_id {PRED.format(img='r.image_id')} "
                f"WHERE r.user_id = :u{_tags('r.image_id', inc, exc, style)}"
            )
            cols = f"i.name, r.rating, r.rated_at, p.score, p.predicted_by, {count} AS total"
            total = ids.ratings[u] if not (inc or exc) else None
            if total is not None and offset * 2 > total:
                # From the other end: the rows before the page, counted from
                # the last one, then put back in the listing's order.
                lim = min(PAGE_SIZE, total - offset)
                rparams = {**params, "lim": lim, "off": total - offset - lim}
                sql = (
                    f"SELECT * FROM (SELECT {cols}, {key} AS k {body} ORDER BY {key} ASC, i.name DESC "
                    f"LIMIT :lim OFFSET :off) s ORDER BY k DESC, name"
                )
                out.append((sql.replace("SELECT *", "SELECT name, rating, rated_at, score, predicted_by, total"),
                            rparams))  # fmt: skip
            out.append((f"SELECT {cols} {body} ORDER BY {key} DESC, i.name LIMIT :lim OFFSET :off", params))
        elif request.rated == "no":
            if inc or exc:
                count = (
                    f"(SELECT count(*) FROM images c WHERE {UNRATED.format(img='c.id')}"
                    f"{_tags('c.id', inc, exc, count_style)})"
                )
            else:
                count = "((SELECT count(*) FROM images) - (SELECT count(*) FROM ratings WHERE user_id = :u))"
            if request.sort == "predicted-desc":
                sql = (
                    f"SELECT i.name, NULL, NULL, p.score, p.predicted_by, {count} AS total "
                    f"FROM predictions p JOIN images i ON i.id = p.image_id "
                    f"WHERE p.user_id = :u AND p.model_version = :v AND {UNRATED.format(img='p.image_id')}"
                    f"{_tags('p.image_id', inc, exc, style)} ORDER BY p.score DESC, i.name LIMIT :lim OFFSET :off"
                )
                out.append((sql, params))
                continue
            sql = (
                f"SELECT i.name, NULL, NULL, p.score, p.predicted_by, {count} AS total "
                f"FROM images i {PRED.format(img='i.id')} WHERE {UNRATED.format(img='i.id')}"
                f"{_tags('i.id', inc, exc, style)} ORDER BY i.created_at DESC, i.name LIMIT :lim OFFSET :off"
            )
            out.append((sql, params))
        else:  # rated=all, date-desc: two index-ordered streams merged and cut
            params = {**params, "n": offset + PAGE_SIZE}
            cut = "LIMIT :n"
            sql = (
                f"SELECT s.name, s.rating, s.rated_at, p.score, p.predicted_by, "
                f"(SELECT count(*) FROM images) AS total FROM ("
                f"SELECT * FROM (SELECT i.id, i.name, r.rating, r.rated_at, r.rated_at AS d FROM ratings r "
                f"JOIN images i ON i.id = r.image_id WHERE r.user_id = :u ORDER BY r.rated_at DESC, i.name {cut}) a "
                f"UNION ALL SELECT * FROM (SELECT i.id, i.name, CAST(NULL AS FLOAT), "
                f"CAST(NULL AS TIMESTAMP WITH TIME ZONE), i.created_at AS d FROM images i "
                f"WHERE {UNRATED.format(img='i.id')} ORDER BY i.created_at DESC, i.name {cut}) b"
                f") s {PRED.format(img='s.id')} ORDER BY s.d DESC, s.name LIMIT :lim OFFSET :off"
            )
            out.append((sql, params))
            naive = (
                f"SELECT i.name, r.rating, r.rated_at, p.score, p.predicted_by, "
                f"(SELECT count(*) FROM images) AS total FROM images i "
                f"LEFT JOIN ratings r ON r.user_id = :u AND r.image_id = i.id {PRED.format(img='i.id')} "
                f"ORDER BY coalesce(r.rated_at, i.created_at) DESC, i.name LIMIT :lim OFFSET :off"
            )
            out.append((naive, params))
    if db == "postgresql":
        out = [(re.sub(r":(\w+)", r"%(\1)s", sql), p) for sql, p in out]
    return out


# -- running both ------------------------------------------------------------------


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
                f"ms  {'met' if result.met else 'MISSED'}",
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


def report(results: list[Result]) -> bool:
    rows = [
        [r.database, r.shape, len(r.api), r.api_p50, r.floor_p50, r.api_p50 / r.floor_p50, r.allowance,
         "met" if r.met else "MISSED", r.statement]
        for r in results
    ]  # fmt: skip
    print_table(
        f"GET /getuserdata vs the SQL floor (p50, concurrency 1, pages of {PAGE_SIZE}; "
        f"target: tagrate <= {RATIO} x floor + {SLACK_MS:.0f} ms)",
        ["database", "shape", "calls", "tagrate ms", "floor ms", "ratio", "allowance ms", "", "floor stmts"],
        rows,
    )
    return all(r.met for r in results)


def main(argv: list[str] | None = None) -> int:
    keep_pg = ""
    if argv and "--keep-pg" in argv:  # --keep-pg NAME: load PostgreSQL once into NAME and keep it
        at = argv.index("--keep-pg")
        keep_pg, argv = argv[at + 1], argv[:at] + argv[at + 2 :]
    args, dataset, generator, databases = parse_dataset_args(
        "python -m bench userdata --floor", __doc__.split("\n\n")[0], argv, full_calls=60, quick_calls=20
    )
    args.keep_pg = keep_pg
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    loads = []
    with tempfile.TemporaryDirectory(prefix="tagrate-bench-floor-") as tmp:
        for database in databases:
            with prepared(database, generator, args, Path(tmp)) as generation:
                stack = start_stack(generation.url, Path(tmp) / database)
                try:
                    before = os.getloadavg()[0]
                    results += asyncio.run(bench_database(generation.url, stack.gateway_url, database, dataset,
                                                          args.calls))  # fmt: skip
                    loads.append(f"{database} {before:.1f} -> {os.getloadavg()[0]:.1f}")
                finally:
                    stack.stop()
    print(f"1-minute load average on {os.cpu_count()} cores, before -> after measuring: {'; '.join(loads)}")
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
