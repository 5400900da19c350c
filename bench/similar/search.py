"""``--part search``: on the bench library with a vector per image
(``library.py``), the similarity index as the service builds it, in this
process (build time, memory, recall@24 of the two-stage search against
exact search), then the real dataset service and gateway as processes:
/getsimilar (by stored image, with a user, with a user and a tag filter)
next to a /getuserdata page, interleaved, concurrency 1."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from tagrate_dataset.config import DatasetSettings

from ..harness.dataset_stack import start_stack
from .common import EXTRACTOR, loadavg, pct
from .library import Library

TARGET_RATIO = 2.0
PROBES = 40  # recall@24 is averaged over this many stored images
TAG = "tag_3"  # on 62 % of the images at the full size
# Calls of each request before the measured ones: the first of each is cold
# (the filter's bitset is read from tag_members once per tag and change
# count, ~0.2 s at 100k); it is reported apart, not in the percentiles.
WARMUP = 5
LABELS = {
    "userdata": "/getuserdata page",
    "similar": "/getsimilar",
    "similar+user": "/getsimilar with user",
    "similar+tag": f"/getsimilar with user, filters={TAG}",
}


@dataclass
class IndexRun:
    vectors: int
    build_s: float
    fit_s: float
    memory_bytes: int
    reduced_bytes: int
    two_stage: bool
    exact_ms: list[float] = field(default_factory=list)
    two_stage_ms: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)


@dataclass
class SearchRun:
    library: Library
    index: IndexRun
    first_answer_s: float = 0.0
    loadavg_after: str = ""
    times: dict[str, list[float]] = field(default_factory=dict)
    first_ms: dict[str, float] = field(default_factory=dict)  # each request's first (cold) call


def index_run(url: str, vectors: int) -> IndexRun:
    """The index as the service builds it (the rows read, then the
    projection fitted), and searches of it from stored images."""
    from tagrate_dataset.db import Database, create_db_engine, migrate
    from tagrate_dataset.similar.vectors import VectorIndex

    engine = create_db_engine(url, pool_size=2, max_overflow=0)
    try:
        migrate(engine)
        settings = DatasetSettings(tagger_addr="", rater_addr="")
        index = VectorIndex(Database(engine), settings.similar_max_vectors, 2.0, settings.similar_ann_min_vectors)
        index.ensure(EXTRACTOR)
        run = IndexRun(
            vectors,
            index.build_seconds,
            index.fit_seconds,
            index.memory_bytes,
            index._reduced.nbytes + index._basis.nbytes,
            index.two_stage,
        )
        rng = np.random.default_rng(3)
        for image_id in (int(i) for i in rng.integers(1, vectors + 1, PROBES)):
            vector = index.vector(image_id)
            assert vector is not None
            t = time.perf_counter()
            truth = index.search(vector, 24, exclude=image_id, exact=True)
            run.exact_ms.append((time.perf_counter() - t) * 1000)
            if run.two_stage:
                t = time.perf_counter()
                found = index.search(vector, 24, exclude=image_id)
                run.two_stage_ms.append((time.perf_counter() - t) * 1000)
                run.recall.append(len({i for i, _ in truth} & {i for i, _ in found}) / 24)
        return run
    finally:
        engine.dispose()


def _timed(http: httpx.Client, path: str, params: dict[str, str | int]) -> float:
    start = time.perf_counter()
    response = http.get(path, params=params)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{path} {params}: {response.status_code} {response.text[:300]}")
    return elapsed


def _round(http: httpx.Client, times: dict[str, list[float]], user: str, image: str, page: int) -> None:
    """The page, then each /getsimilar request, one after the other."""
    times["userdata"].append(_timed(http, "/getuserdata", {"user": user, "page": page}))
    times["similar"].append(_timed(http, "/getsimilar", {"image": image}))
    times["similar+user"].append(_timed(http, "/getsimilar", {"image": image, "user": user}))
    times["similar+tag"].append(_timed(http, "/getsimilar", {"image": image, "user": user, "filters": TAG}))


def search(lib: Library, vectors: int, calls: int, work: Path) -> SearchRun:
    run = SearchRun(lib, index_run(lib.url, vectors))
    names, users = lib.names, lib.users
    stack = start_stack(lib.url, work)
    try:
        with httpx.Client(base_url=stack.gateway_url, timeout=120) as http:
            t = time.perf_counter()
            while http.get("/getsimilar", params={"image": names[0]}).status_code == 503:
                time.sleep(0.5)  # 503 while the service builds its index in the background
            run.first_answer_s = time.perf_counter() - t
            warm: dict[str, list[float]] = {key: [] for key in LABELS}
            for n in range(-WARMUP, 0):
                _round(http, warm, users[n % len(users)], names[n % len(names)], 1 + n % 20)
            run.first_ms = {key: values[0] for key, values in warm.items()}
            run.times = {key: [] for key in LABELS}
            for n in range(calls):
                _round(http, run.times, users[n % len(users)], names[(n + 1) % len(names)], 1 + n % 20)
            run.loadavg_after = loadavg()
    finally:
        stack.stop()
    return run


def service_rows(run: SearchRun) -> list[list[object]]:
    page = run.times["userdata"]
    p50, p95 = statistics.median(page), pct(page, 0.95)
    rows: list[list[object]] = []
    for key, values in run.times.items():
        ratio = statistics.median(values) / p50
        verdict = "" if key == "userdata" else ("met" if ratio <= TARGET_RATIO else "MISSED")
        rows.append(
            [run.library.database, LABELS[key], statistics.median(values), pct(values, 0.95), max(values),
             f"{ratio:.2f}x", f"{pct(values, 0.95) / p95:.2f}x", run.first_ms.get(key, 0.0), verdict]
        )  # fmt: skip
    return rows


def index_rows(run: SearchRun) -> list[list[object]]:
    ix = run.index
    rows: list[list[object]] = [
        [run.library.database, "exact (every full row)", ix.vectors, ix.build_s - ix.fit_s,
         (ix.memory_bytes - ix.reduced_bytes) / 2**20, statistics.median(ix.exact_ms), pct(ix.exact_ms, 0.95), 1.0]
    ]  # fmt: skip
    if ix.two_stage:
        rows.append(
            [run.library.database, "two-stage (128 principal components, then exact)", ix.vectors, ix.build_s,
             ix.memory_bytes / 2**20, statistics.median(ix.two_stage_ms), pct(ix.two_stage_ms, 0.95),
             float(np.mean(ix.recall))]
        )  # fmt: skip
    return rows
