"""The similarity index over a real database (SQLite and PostgreSQL): built
from the stored vectors, exact (the same top-k as a brute-force ranking),
current after vectors are stored by anyone (it reads what is new), rows
removed, bounded (a library past the bound is refused by name), and a
large library built in the background while searches answer 503."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tagrate_common.errors import Overloaded
from tagrate_common.images import ImageInfo
from tagrate_dataset.db import Database, create_db_engine, migrate
from tagrate_dataset.images import crud
from tagrate_dataset.images.features import vector_bytes
from tagrate_dataset.models import utc_now
from tagrate_dataset.records import new_image
from tagrate_dataset.similar.vectors import VectorIndex

DIM = 32


@pytest.fixture
def db(database_url: str):
    engine = create_db_engine(database_url, pool_size=2, max_overflow=0)
    migrate(engine)
    yield Database(engine)
    engine.dispose()


def store(db: Database, vectors: np.ndarray, start: int = 0, extractor: str = "x1") -> list[int]:
    def write(session) -> list[int]:
        ids = []
        for n, vector in enumerate(vectors, start):
            info = ImageInfo("PNG", 8, 8, 100, f"{n:064x}")
            image = new_image(session, info, f"{n}.png", utc_now())
            crud.put_image_features(session, image.name, extractor, vector_bytes(vector), DIM)
            ids.append(image.id)
        return ids

    return db.write(write)


def test_exact_current_removable_and_bounded(db: Database) -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, DIM)).astype(np.float32)
    ids = store(db, vectors)
    index = VectorIndex(db, max_vectors=400, sync_seconds=0)
    index.ensure("x1")
    assert index.count == 300
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    query = rng.normal(size=DIM).astype(np.float32)
    found = index.search(query, 10)
    truth = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10]
    assert [i for i, _ in found] == [ids[k] for k in truth]
    assert found[0][1] == pytest.approx(float(unit[truth[0]] @ (query / np.linalg.norm(query))), abs=1e-5)
    # Excluding the query image, and restricting to allowed ids.
    assert ids[0] not in [i for i, _ in index.search(vectors[0], 5, exclude=ids[0])]
    allowed = np.array(sorted(ids[100:110]), dtype=np.int64)
    assert {i for i, _ in index.search(query, 50, allowed=allowed)} == set(ids[100:110])
    # Vectors stored afterwards are found by the next search's sync.
    more = store(db, rng.normal(size=(50, DIM)).astype(np.float32), start=300)
    index.ensure("x1")
    assert index.count == 350
    assert index.search(np.asarray(index.vector(more[-1])), 1)[0][0] == more[-1]
    index.remove([more[-1], ids[0]])
    assert index.count == 348 and index.vector(more[-1]) is None
    assert {i for i, _ in index.search(query, 400)} == set(ids[1:]) | set(more[:-1])
    # Past the bound: refused by name, nothing half-added.
    store(db, rng.normal(size=(60, DIM)).astype(np.float32), start=400)
    with pytest.raises(Overloaded) as refused:
        index.ensure("x1", force=True)
    assert refused.value.code == "similarity_index_full"


def test_a_build_runs_in_the_background(db: Database) -> None:
    store(db, np.random.default_rng(2).normal(size=(200, DIM)).astype(np.float32))
    index = VectorIndex(db, max_vectors=1000, sync_seconds=0)
    assert index.ready_for("x1") is False  # the build starts; the caller answers 503
    deadline = time.monotonic() + 30
    while not index.ready_for("x1"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert index.count == 200


def test_past_its_threshold_the_projections_choose_candidates_scored_exactly(db: Database) -> None:
    rng = np.random.default_rng(3)
    # Most of the variance in a few directions, as in a backbone's features.
    vectors = (rng.normal(size=(400, 6)) @ rng.normal(size=(6, DIM)) + 0.3 * rng.normal(size=(400, DIM))).astype(
        np.float32
    )
    ids = store(db, vectors)
    index = VectorIndex(db, max_vectors=1000, sync_seconds=0, ann_min_vectors=300, reduced_dims=8, candidates_min=40)
    assert not index.two_stage
    index.ensure("x1")
    assert index.two_stage  # 400 rows: past the threshold, the projection is fitted
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    recall = []
    for q in range(20):
        found = index.search(vectors[q], 10, exclude=ids[q])
        scores = unit @ unit[q]
        scores[q] = -np.inf
        truth = {ids[k] for k in np.argsort(-scores)[:10]}
        recall.append(len(truth & {i for i, _ in found}) / 10)
        for image_id, score in found:  # scored exactly
            assert score == pytest.approx(float(unit[ids.index(image_id)] @ unit[q]), abs=1e-5)
        assert {i for i, _ in index.search(vectors[q], 10, exclude=ids[q], exact=True)} == {
            ids[k] for k in np.argsort(-scores)[:10]
        }
    assert np.mean(recall) >= 0.95
    # The duplicate finder's neighbours come from the same two stages: each
    # query's k nearest others, exactly scored, never itself, at or above the
    # similarity asked; nearly all of the exact ones.
    queries = ids[:40]
    pairs = index.neighbours(queries, 5, 0.2)
    exact_pairs = set()
    for q in range(40):
        scores = unit @ unit[q]
        scores[q] = -np.inf
        exact_pairs |= {(ids[q], ids[k]) for k in np.argsort(-scores)[:5] if scores[k] >= 0.2}
    for image_id, other, score in pairs:
        assert image_id != other and score >= 0.2
        assert score == pytest.approx(float(unit[ids.index(image_id)] @ unit[ids.index(other)]), abs=1e-5)
    assert sum(1 for q in queries if q in {a for a, _, _ in pairs}) >= 35
    assert len({(a, b) for a, b, _ in pairs} & exact_pairs) >= 0.95 * len(exact_pairs)
    # Within a filter, only allowed ids, still exactly scored.
    allowed = np.array(sorted(ids[::7]), dtype=np.int64)
    found = index.search(vectors[0], 5, allowed=allowed)
    assert len(found) == 5 and {i for i, _ in found} <= set(allowed.tolist())
    # The same filter as booleans indexed by image id (an unpacked bitset, shorter than the largest id).
    flags = np.zeros(max(ids) - 3, dtype=bool)
    flags[[i for i in allowed.tolist() if i < flags.size]] = True
    short = np.array([i for i in allowed.tolist() if i < flags.size], dtype=np.int64)
    assert index.search(vectors[0], 20, allowed=flags) == index.search(vectors[0], 20, allowed=short)
    assert {i for i, _ in index.search(vectors[0], 20, allowed=flags)} <= set(short.tolist())
    # Kept current: a new vector is found, a removed one is not.
    [new] = store(db, rng.normal(size=(1, DIM)).astype(np.float32), start=400)
    index.ensure("x1")
    assert index.search(np.asarray(index.vector(new)), 1)[0][0] == new
    index.remove([new])
    assert new not in {i for i, _ in index.search(np.asarray(vectors[0]), 50)}
