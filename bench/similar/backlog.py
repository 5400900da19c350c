"""``--part backlog``: duplicate grouping of a backlog of hashes (2 % of
them planted near-duplicates of another with 0-8 bits flipped, their unit
vectors close): the hash stage for all of them in one pass, and the
feature-neighbour stage per image through the similarity index itself."""

from __future__ import annotations

import time

import numpy as np

from tagrate_dataset.similar.duplicates import GroupingSettings, confirm, hash_candidate_pairs

from ..harness.measure import print_table
from .common import DIM, clustered, grouping_settings, loadavg


def backlog(n: int) -> None:
    rng = np.random.default_rng(11)
    hashes = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64) ^ (
        rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(63)
    )
    vectors = clustered(rng, n, DIM)
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
    settings = grouping_settings()
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
        f"loadavg {loadavg()}",
        ["images", "candidates", "candidate s", "hash stage s", "planted found"],
        [[n, len(pairs), candidates_s, hash_stage, f"{len(found & truth)}/{len(truth)}"]],
    )
    print_table(
        f"feature-neighbour stage ({settings.neighbours} neighbours at or above {settings.neighbour_similarity}, "
        f"VectorIndex.neighbours over the {n} vectors; 256 queries, the modes interleaved, best of 2); "
        f"loadavg {loadavg()}",
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
