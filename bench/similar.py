"""Similar images and near-duplicates (issue 27): ``python -m bench similar
[--part search|backlog|photos|all] [--scale F] [--calls N]``.

- ``search``: the 100k-image bench library (SQLite) with a synthetic
  1280-float vector per image (500 clustered centres plus noise), the real
  dataset service and gateway as processes; /getsimilar (by stored image
  with a user, and with a tag filter) p50/p95 next to a /getuserdata page,
  interleaved, concurrency 1; the similarity index's build time and memory,
  and the recall@24 of its two-stage search against exact search.
- ``backlog``: duplicate grouping of 100k hashes (2 % near-duplicates of
  another with 0-8 bits flipped, their unit vectors close): the hash stage
  for all of them in one pass, and the feature-neighbour stage per image.
- ``photos``: precision and recall of duplicate detection on real photos
  (scikit-image's samples) with the tests' variants (q30 re-encode, half
  size, 5 % and 10 % crops, EXIF stripped, PNG) plus drawn look-alikes that
  are distinct, through the service's candidate and confirmation code with
  the real rater's features, pairwise over the groups found."""

from __future__ import annotations

import argparse
import io
import itertools
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.harness.dataset import RESULTS_DIR, DatasetGenerator, DatasetShape, sqlite_database
from bench.harness.dataset_stack import start_stack
from bench.harness.measure import print_table
from tagrate_dataset.config import DatasetSettings
from tagrate_dataset.similar.duplicates import GroupingSettings, confirm, hash_candidate_pairs

DIM = 1280
EXTRACTOR = "bench-synthetic-1280"


def _settings() -> GroupingSettings:
    s = DatasetSettings(tagger_addr="", rater_addr="")
    return GroupingSettings(
        s.duplicate_hash_distance,
        s.duplicate_min_similarity,
        s.duplicate_neighbour_similarity,
        s.duplicate_min_alignment,
        s.duplicate_batch_images,
    )


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()


def _clustered(rng: np.random.Generator, n: int, dim: int, centres: np.ndarray | None = None) -> np.ndarray:
    """``n`` unit vectors around 500 centres (``centres`` when given: the
    same centres across chunks of one library)."""
    if centres is None:
        centres = _centres(rng, dim)
    x = centres[rng.integers(0, len(centres), n)] + 0.7 * rng.normal(size=(n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _centres(rng: np.random.Generator, dim: int) -> np.ndarray:
    return rng.normal(size=(500, dim)).astype(np.float32)


# ---- search ---------------------------------------------------------------------


def _add_vectors(path: Path, n_images: int, seed: int) -> float:
    """Synthetic vectors for every image of the SQLite bench library."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    conn = sqlite3.connect(path)
    try:
        ids = [row[0] for row in conn.execute("SELECT id FROM images ORDER BY id")]
        now = "2026-12-07 12:00:00.000000"
        centres = _centres(rng, DIM)  # one set for the library: 500 clusters of ~200 images at 100k
        for chunk in range(0, len(ids), 5000):
            part = ids[chunk : chunk + 5000]
            vectors = _clustered(rng, len(part), DIM, centres)
            conn.executemany(
                "INSERT INTO image_features (image_id, extractor_id, dim, vector, created_at) VALUES (?, ?, ?, ?, ?)",
                [(i, EXTRACTOR, DIM, v.astype("<f4").tobytes(), now) for i, v in zip(part, vectors, strict=True)],
            )
        conn.commit()
    finally:
        conn.close()
    return time.perf_counter() - start


def _timed(http: httpx.Client, path: str, params: dict) -> float:
    start = time.perf_counter()
    response = http.get(path, params=params)
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{path} {params}: {response.status_code} {response.text[:300]}")
    return elapsed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def search(scale: float, calls: int) -> None:
    shape = DatasetShape().scaled(scale)
    generation = sqlite_database(DatasetGenerator(shape), RESULTS_DIR)
    source = Path(generation.url.removeprefix("sqlite:///"))
    with tempfile.TemporaryDirectory(prefix="bench-similar-") as tmp:
        work = Path(tmp)
        db = work / "library.db"
        shutil.copy(source, db)
        load_seconds = _add_vectors(db, shape.images, 7)
        url = f"sqlite:///{db}"
        # The index as the service builds it, in this process: time and memory.
        from tagrate_dataset.db import Database, create_db_engine, migrate
        from tagrate_dataset.similar.vectors import VectorIndex

        engine = create_db_engine(url, pool_size=2, max_overflow=0)
        migrate(engine)
        settings = DatasetSettings(tagger_addr="", rater_addr="")
        index = VectorIndex(Database(engine), settings.similar_max_vectors, 2.0, settings.similar_ann_min_vectors)
        index.ensure(EXTRACTOR)  # as the service builds it: the rows read, then the projection fitted
        build, fit, memory = index.build_seconds, index.fit_seconds, index.memory_bytes
        reduced_memory = index._reduced.nbytes + index._basis.nbytes
        assert index.two_stage
        rng = np.random.default_rng(3)
        probes = [int(i) for i in rng.integers(1, shape.images + 1, 40)]
        exact_ms, ann_ms, recall = [], [], []
        for image_id in probes:
            vector = index.vector(image_id)
            assert vector is not None
            t = time.perf_counter()
            truth = index.search(vector, 24, exclude=image_id, exact=True)
            exact_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            found = index.search(vector, 24, exclude=image_id)
            ann_ms.append((time.perf_counter() - t) * 1000)
            recall.append(len({i for i, _ in truth} & {i for i, _ in found}) / 24)
        engine.dispose()
        del index
        with sqlite3.connect(db) as conn:
            names = [row[0] for row in conn.execute("SELECT name FROM images ORDER BY random() LIMIT 200")]
            users = [row[0] for row in conn.execute("SELECT name FROM users")]
        stack = start_stack(url, work)
        try:
            with httpx.Client(base_url=stack.gateway_url, timeout=120) as http:
                t = time.perf_counter()
                while True:  # 503 while the service builds its index in the background
                    response = http.get("/getsimilar", params={"image": names[0]})
                    if response.status_code != 503:
                        break
                    time.sleep(0.5)
                first = time.perf_counter() - t
                times: dict[str, list[float]] = {"userdata": [], "similar": [], "similar+user": [], "similar+tag": []}
                for n in range(calls):
                    user = users[n % len(users)]
                    image = names[(n + 1) % len(names)]
                    times["userdata"].append(_timed(http, "/getuserdata", {"user": user, "page": 1 + n % 20}))
                    times["similar"].append(_timed(http, "/getsimilar", {"image": image}))
                    times["similar+user"].append(_timed(http, "/getsimilar", {"image": image, "user": user}))
                    times["similar+tag"].append(
                        _timed(http, "/getsimilar", {"image": image, "user": user, "filters": "tag_3"})
                    )
        finally:
            stack.stop()
    base = statistics.median(times["userdata"])
    print_table(
        f"/getsimilar at {shape.images} images (SQLite, concurrency 1, {calls} calls each, interleaved); "
        f"loadavg {_loadavg()}",
        ["request", "p50 ms", "p95 ms", "p50 / userdata p50"],
        [[k, statistics.median(v), _pct(v, 0.95), statistics.median(v) / base] for k, v in times.items()],
    )
    print_table(
        "similarity index, in-process over the same database (recall@24 of the two-stage search against exact)",
        ["search", "vectors", "build s", "memory MiB", "search p50 ms", "search p95 ms", "recall@24"],
        [
            [
                "exact (every full row)",
                shape.images,
                build - fit,
                (memory - reduced_memory) / 2**20,
                statistics.median(exact_ms),
                _pct(exact_ms, 0.95),
                1.0,
            ],
            [
                "two-stage (128 principal components, then exact)",
                shape.images,
                build,
                memory / 2**20,
                statistics.median(ann_ms),
                _pct(ann_ms, 0.95),
                float(np.mean(recall)),
            ],
        ],
    )
    print(
        f"the projection was fitted in {fit:.1f} s of the build ({reduced_memory / 2**20:.0f} MiB); "
        f"service: first /getsimilar answered after {first:.1f} s (503 while the index is built); "
        f"synthetic vectors stored in {load_seconds:.1f} s"
    )


# ---- backlog --------------------------------------------------------------------


def backlog(n: int) -> None:
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64) ^ (
        rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63)
    )
    vectors = _clustered(rng, n, DIM)
    planted = rng.choice(np.arange(1, n), size=n // 50, replace=False)
    sources = rng.integers(0, n, planted.size)
    sources = np.where(sources == planted, (planted + 1) % n, sources)
    for target, source in zip(planted.tolist(), sources.tolist(), strict=True):
        flips = rng.choice(64, size=int(rng.integers(0, 9)), replace=False)
        mask = np.uint64(sum(1 << int(b) for b in flips))
        hashes[target] = hashes[source] ^ mask
        v = vectors[source] + 0.15 * rng.normal(size=DIM).astype(np.float32) / np.sqrt(DIM)
        vectors[target] = v / np.linalg.norm(v)
    thumbs = {i: bytes(rng.integers(0, 256, 1024, dtype=np.uint8)) for i in range(n)}
    for target, source in zip(planted.tolist(), sources.tolist(), strict=True):
        thumbs[target] = thumbs[source]
    settings = _settings()
    start = time.perf_counter()
    pairs = hash_candidate_pairs(hashes, np.ones(n, dtype=bool), settings.hash_distance)
    candidates_s = time.perf_counter() - start
    confirmed = confirm(
        [(int(a), int(b)) for a, b in pairs],
        lambda ids: {i: vectors[i] for i in ids},
        lambda ids: {i: thumbs[i] for i in ids},
        settings,
    )
    hash_stage = time.perf_counter() - start
    found = {tuple(sorted(p)) for p in confirmed}
    truth = {tuple(sorted((int(a), int(b)))) for a, b in zip(planted.tolist(), sources.tolist(), strict=True)}
    stage = feature_stage(vectors, settings)
    print_table(
        f"duplicate grouping of a backlog of {n} hashes (hash stage: every image a query, one pass); "
        f"loadavg {_loadavg()}",
        [
            "images",
            "candidates",
            "candidate s",
            "hash stage s",
            "planted found",
        ],
        [
            [
                n,
                len(pairs),
                candidates_s,
                hash_stage,
                f"{len(found & truth)}/{len(truth)}",
            ]
        ],
    )
    print_table(
        f"feature-neighbour stage ({settings.neighbours} neighbours at or above {settings.neighbour_similarity}, "
        f"VectorIndex.neighbours over the {n} vectors; 256 queries, the modes interleaved, best of 2); "
        f"loadavg {_loadavg()}",
        ["search", "ms/image", "s for the backlog (extrapolated)", "neighbour pairs found", "recall vs exact"],
        stage,
    )


def feature_stage(vectors: np.ndarray, settings: GroupingSettings) -> list[list[object]]:
    """The duplicate finder's feature-neighbour stage through the index
    itself: exact (every full row) and two stages (projections, then the
    candidates exactly), with the recall of the pairs it finds against exact."""
    from tagrate_dataset.similar.vectors import VectorIndex

    n = len(vectors)
    queries = np.random.default_rng(5).choice(n, 256, replace=False).tolist()
    indexes = {}
    for name, ann_min in (("exact", 0), ("two stages", 20_000)):
        index = VectorIndex(None, 2 * n, 2.0, ann_min)  # type: ignore[arg-type]  # filled here, no database
        index.extractor_id, index.dim = "bench", vectors.shape[1]
        index._put(np.arange(n, dtype=np.int64), vectors)
        index._maybe_fit()
        indexes[name] = index
    seconds: dict[str, list[float]] = {name: [] for name in indexes}
    pairs: dict[str, set[tuple[int, int]]] = {}
    for _ in range(2):
        for name, index in indexes.items():
            start = time.perf_counter()
            found = index.neighbours(queries, settings.neighbours, settings.neighbour_similarity)
            seconds[name].append(time.perf_counter() - start)
            pairs[name] = {(a, b) for a, b, _ in found}
    rows: list[list[object]] = []
    for name in indexes:
        ms = min(seconds[name]) / len(queries) * 1000
        recall = len(pairs[name] & pairs["exact"]) / max(1, len(pairs["exact"]))
        rows.append([name, ms, ms * n / 1000, len(pairs[name]), f"{recall:.3f}"])
    return rows


# ---- photos ---------------------------------------------------------------------


def photos() -> None:
    from PIL import Image

    from tagrate_common.images import ImageLimits, inspect_image
    from tagrate_common.vision.loaders import load_default_model
    from tests.similar.photos import VARIANTS, variant
    from tests.trainer.scenes import scene

    names = [
        "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry", "page",
        "hubble_deep_field", "colorwheel", "logo", "text", "horse", "clock", "retina", "brick", "grass", "gravel",
    ]  # fmt: skip
    files: list[tuple[str, bytes]] = []
    for name in names:
        from tests.similar.photos import original

        files.append((name, original(name)))
        files += [(name, variant(name, kind)) for kind in VARIANTS]
    files += [(f"circle{n}", scene(1.0, 500 + n, 160)) for n in range(8)]
    files += [(f"stripes{n}", scene(0.0, 600 + n, 160)) for n in range(8)]
    model = load_default_model("cpu")
    limits = ImageLimits(64 << 20, 100_000_000)
    hashes, thumbs, vectors = [], {}, {}
    for i, (_, data) in enumerate(files):
        info = inspect_image(data, "x", limits, perceptual=True)
        assert info.dhash is not None and info.thumb is not None
        hashes.append(info.dhash)
        thumbs[i] = info.thumb
        f = model.forward_features(model.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None])[0]
        vectors[i] = (f / np.linalg.norm(f)).astype(np.float32)
    settings = _settings()
    h = np.array(hashes, dtype=np.int64).view(np.uint64)
    candidates = {
        (int(a), int(b)) for a, b in hash_candidate_pairs(h, np.ones(len(files), dtype=bool), settings.hash_distance)
    }
    matrix = np.stack([vectors[i] for i in range(len(files))])
    scores = matrix @ matrix.T
    np.fill_diagonal(scores, -np.inf)
    for i in range(len(files)):
        for j in np.argsort(-scores[i])[:8]:
            if scores[i, j] >= settings.neighbour_similarity:
                candidates.add((min(i, int(j)), max(i, int(j))))
    confirmed = confirm(
        candidates, lambda ids: {i: vectors[i] for i in ids}, lambda ids: {i: thumbs[i] for i in ids}, settings
    )
    parent = list(range(len(files)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in confirmed:
        parent[root(a)] = root(b)
    rows = []
    for subset, label in (
        (lambda n: True, "all"),
        (lambda n: n not in ("brick", "grass", "gravel"), "without textures"),
    ):
        keep = [i for i, (name, _) in enumerate(files) if subset(name)]
        tp = fp = fn = 0
        for a, b in itertools.combinations(keep, 2):
            same, grouped = files[a][0] == files[b][0], root(a) == root(b)
            tp += same and grouped
            fp += grouped and not same
            fn += same and not grouped
        rows.append([label, len(keep), tp, fp, fn, tp / max(1, tp + fp), tp / max(1, tp + fn)])
    print_table(
        f"duplicate detection on real photographs ({len(names)} photos x (original + {len(VARIANTS)} variants) "
        f"+ 16 look-alike scenes), pairwise; loadavg {_loadavg()}",
        ["set", "images", "true pairs found", "false pairs", "missed pairs", "precision", "recall"],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench similar", description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("search", "backlog", "photos", "all"), default="all")
    parser.add_argument("--scale", type=float, default=1.0, help="Fraction of the 100k-image library (search).")
    parser.add_argument("--calls", type=int, default=60, help="Requests per measurement (search).")
    parser.add_argument("--backlog", type=int, default=100_000, help="Hashes in the backlog.")
    args = parser.parse_args(argv or [])
    print(f"{os.cpu_count()} cores; loadavg {_loadavg()}", flush=True)
    if args.part in ("photos", "all"):
        photos()
    if args.part in ("backlog", "all"):
        backlog(args.backlog)
    if args.part in ("search", "all"):
        search(args.scale, args.calls)
    return 0
