"""The similarity index: every cached feature vector of one extractor, unit
length, as rows of one float32 matrix in the dataset service's memory, so a
search is one matrix-vector product over the whole library (exact cosine
similarity, no approximation) and a top-k selection.

It is built from the database on first use (``DatasetServer`` builds it in
the background at start), then kept current by reading, at most every
``similar_sync_seconds`` and before a search, the vectors stored since it
last looked (one range of ``ix_image_features_extractor_created``): vectors
stored by this process, by another replica or by the rater's embedding
work alike. A deleted image's row is dropped when a search meets it (its
name no longer resolves) and at the next full build; answers are always
resolved through the database, so a deleted image is never answered.

Memory: ``similar_max_vectors`` rows at most (1280 float32 values are 5 KiB
a row: 100000 images are 490 MiB), plus the ids; growing doubles the
capacity (never past the bound). Past the bound a search answers 503
(``similarity_index_full``) rather than hold more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlmodel import Session, select

from tagrate_common.errors import Overloaded

from ..db import Database
from ..models import ImageFeatures, utc_now

log = logging.getLogger(__name__)

# Vectors stored in a transaction that commits later than a sync read are
# found by the next sync: each sync re-reads this far before its watermark.
_SYNC_OVERLAP = timedelta(seconds=5)
_READ_CHUNK = 2048
# The graph: candidates per result scored exactly, and its search breadth.
_ANN_OVERSAMPLE = 4
_ANN_EF = 256


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


class VectorIndex:
    """Exact cosine search over one extractor's vectors (thread-safe)."""

    def __init__(self, db: Database, max_vectors: int, sync_seconds: float, ann_min_vectors: int = 0) -> None:
        self.db = db
        # From this many vectors on, an HNSW graph (usearch) answers unfiltered
        # searches (0: never); the matrix stays for exact scores and filters.
        self.ann_min_vectors = ann_min_vectors
        self._ann: Any = None
        self._ann_building = False
        self.ann_build_seconds = 0.0
        self.max_vectors = max_vectors
        self.sync_seconds = sync_seconds
        self._lock = threading.RLock()
        self.extractor_id: str | None = None
        self.dim = 0
        self.count = 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._rows: dict[int, int] = {}
        self._watermark: datetime | None = None
        self._synced_at = 0.0
        self.build_seconds = 0.0
        self.building: str | None = None  # the extractor a build in progress is for
        self._closed = threading.Event()

    def close(self) -> None:
        """Stops a build in progress (the service is shutting down)."""
        self._closed.set()

    def ready_for(self, extractor_id: str) -> bool:
        """Whether searches for ``extractor_id`` can be answered now; when
        not, starts building the index for it in the background (a request
        never waits for a whole build)."""
        if self.extractor_id == extractor_id and self.building is None:
            return True
        if self.building is None:
            self.building = extractor_id
            threading.Thread(target=self._build_quietly, args=(extractor_id,), daemon=True).start()
        return False

    def _build_quietly(self, extractor_id: str) -> None:
        try:
            self.ensure(extractor_id)
        except Exception:
            log.exception("building the similarity index failed; the next search tries again")
        finally:
            self.building = None

    # ---- reading the database ------------------------------------------------

    def current_extractor(self, session: Session) -> str | None:
        """The extractor of the newest image's vector (the rater's current
        one): one probe of the primary key, whatever the library's size."""
        return session.exec(
            select(ImageFeatures.extractor_id).order_by(ImageFeatures.image_id.desc()).limit(1)  # type: ignore[attr-defined]
        ).first()

    def ensure(self, extractor_id: str | None = None, force: bool = False) -> None:
        """Builds the index (for ``extractor_id``, else the current
        extractor) or brings it up to date."""
        with self._lock:
            if extractor_id is None:
                with self.db.read() as session:
                    extractor_id = self.current_extractor(session)
                if extractor_id is None:
                    return
            if extractor_id != self.extractor_id:
                self._build(extractor_id)
            elif force or time.monotonic() - self._synced_at >= self.sync_seconds:
                self._sync()

    def _build(self, extractor_id: str) -> None:
        self.building = extractor_id
        try:
            self._build_rows(extractor_id)
        finally:
            self.building = None

    def _build_rows(self, extractor_id: str) -> None:
        started = time.perf_counter()
        self.extractor_id, self.count, self.dim = extractor_id, 0, 0
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, 0), dtype=np.float32)
        self._rows = {}
        self._watermark = None
        self._ann = None
        self._read_since(None)
        self.build_seconds = time.perf_counter() - started
        log.info(
            "similarity index built",
            extra={"extractor": extractor_id, "vectors": self.count, "seconds": round(self.build_seconds, 2)},
        )

    def _sync(self) -> None:
        self._read_since(self._watermark)

    def _read_since(self, since: datetime | None) -> None:
        """Adds (or replaces) the vectors stored at or after ``since``; the
        next sync starts where this one started, less the overlap (a vector
        stored by a transaction that commits after this read is found then)."""
        started = utc_now() - _SYNC_OVERLAP
        after_id = -1
        while not self._closed.is_set():
            with self.db.read() as session:
                stmt = select(ImageFeatures.image_id, ImageFeatures.vector).where(
                    ImageFeatures.extractor_id == self.extractor_id, ImageFeatures.image_id > after_id
                )
                if since is not None:
                    stmt = stmt.where(ImageFeatures.created_at >= since)
                rows = session.exec(stmt.order_by(ImageFeatures.image_id).limit(_READ_CHUNK)).all()  # type: ignore[arg-type]
            if not rows:
                break
            after_id = rows[-1][0]
            if self.dim == 0:
                self.dim = len(rows[0][1]) // 4
            usable = [row for row in rows if len(row[1]) == self.dim * 4]  # one extractor: one size
            if usable:
                ids = np.array([row[0] for row in usable], dtype=np.int64)
                vectors = np.stack([np.frombuffer(row[1], dtype="<f4") for row in usable])
                self._put(ids, unit_rows(vectors))
            if len(rows) < _READ_CHUNK:
                break
        self._watermark = started
        self._synced_at = time.monotonic()
        self._maybe_build_ann()

    # ---- changing rows ---------------------------------------------------------

    def _put(self, ids: np.ndarray, rows: np.ndarray) -> None:
        fresh = [n for n, image_id in enumerate(ids.tolist()) if image_id not in self._rows]
        needed = self.count + len(fresh)
        if needed > self.max_vectors:
            raise Overloaded(
                f"the similarity index holds at most {self.max_vectors} vectors (DATASET_SIMILAR_MAX_VECTORS) and "
                f"the library has more",
                "similarity_index_full",
            )
        if needed > len(self._ids) or self._matrix.shape[1] != self.dim:
            capacity = min(self.max_vectors, max(needed, 2 * len(self._ids), 1024))
            matrix = np.zeros((capacity, self.dim), dtype=np.float32)
            ids_grown = np.full(capacity, -1, dtype=np.int64)
            if self.count:
                matrix[: self.count] = self._matrix[: self.count]
                ids_grown[: self.count] = self._ids[: self.count]
            self._matrix, self._ids = matrix, ids_grown
        for n, image_id in enumerate(ids.tolist()):
            row = self._rows.get(image_id)
            if row is None:
                row = self.count
                self._rows[image_id] = row
                self._ids[row] = image_id
                self.count += 1
            self._matrix[row] = rows[n]
            if self._ann is not None:
                if image_id in self._ann:
                    self._ann.remove(image_id)
                self._ann.add(image_id, rows[n])

    def remove(self, image_ids: Sequence[int]) -> None:
        """Drops rows (the last row moves into each gap)."""
        with self._lock:
            for image_id in image_ids:
                row = self._rows.pop(image_id, None)
                if row is None:
                    continue
                if self._ann is not None and image_id in self._ann:
                    self._ann.remove(image_id)
                last = self.count - 1
                if row != last:
                    moved = int(self._ids[last])
                    self._matrix[row] = self._matrix[last]
                    self._ids[row] = moved
                    self._rows[moved] = row
                self._ids[last] = -1
                self.count -= 1

    # ---- searching -------------------------------------------------------------

    def vector(self, image_id: int) -> np.ndarray | None:
        with self._lock:
            row = self._rows.get(image_id)
            return None if row is None else self._matrix[row].copy()

    def vectors(self, image_ids: Sequence[int]) -> dict[int, np.ndarray]:
        with self._lock:
            return {i: self._matrix[self._rows[i]] for i in image_ids if i in self._rows}

    def search(
        self, query: np.ndarray, k: int, exclude: int | None = None, allowed: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """The ``k`` most similar (image id, cosine) to ``query``, most
        similar first; only ids in ``allowed`` (sorted) when given."""
        with self._lock:
            n = self.count
            if n == 0 or k <= 0:
                return []
            unit = unit_rows(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
            if unit.shape[0] != self.dim:
                return []
            if self._ann is not None and allowed is None:
                return self._ann_search(unit, k, exclude)
            scores = self._matrix[:n] @ unit
            ids = self._ids[:n]
            if allowed is not None:
                scores = np.where(np.isin(ids, allowed, assume_unique=True), scores, -np.inf)
            if exclude is not None and exclude in self._rows:
                scores[self._rows[exclude]] = -np.inf
            k = min(k, n)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return [(int(ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def neighbours(self, image_ids: Sequence[int], k: int, min_similarity: float) -> list[tuple[int, int, float]]:
        """For each of ``image_ids`` with a row, its up to ``k`` nearest other
        images at or above ``min_similarity``: (image, other, cosine). One
        matrix product per block of 64 queries, each outside the lock (a
        search is not held up by a long backlog; a row moved meanwhile only
        makes a candidate, which is confirmed again)."""
        out: list[tuple[int, int, float]] = []
        for start in range(0, len(image_ids), 64):
            with self._lock:
                n, matrix = self.count, self._matrix
                ids = self._ids[:n].copy()
                block = [i for i in image_ids[start : start + 64] if i in self._rows]
                rows = [self._rows[i] for i in block]
            kk = min(k, n - 1)
            if not block or kk <= 0:
                continue
            scores = matrix[rows] @ matrix[:n].T
            scores[np.arange(len(rows)), rows] = -np.inf
            top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            for q, image_id in enumerate(block):
                for col in top[q]:
                    score = float(scores[q, col])
                    if score >= min_similarity:
                        out.append((image_id, int(ids[col]), score))
        return out

    # ---- the approximate index ----------------------------------------------------

    def _ann_search(self, unit: np.ndarray, k: int, exclude: int | None) -> list[tuple[int, float]]:
        """The graph's candidates (a few times ``k``), scored exactly from
        the matrix and ranked (caller holds the lock)."""
        found = self._ann.search(unit, min(self.count, _ANN_OVERSAMPLE * k + 16))
        keys = [int(key) for key in np.atleast_1d(found.keys) if int(key) in self._rows and int(key) != exclude]
        if not keys:
            return []
        scores = self._matrix[[self._rows[key] for key in keys]] @ unit
        order = np.argsort(-scores, kind="stable")[:k]
        return [(keys[i], float(scores[i])) for i in order]

    def _maybe_build_ann(self) -> None:
        if self.ann_min_vectors and self._ann is None and not self._ann_building and self.count >= self.ann_min_vectors:
            self._ann_building = True
            threading.Thread(target=self._build_ann, daemon=True, name="similarity-graph").start()

    def _build_ann(self) -> None:
        """Builds the graph from a copy of the rows outside the lock, then
        adds what changed meanwhile and swaps it in."""
        try:
            from usearch.index import Index

            started = time.perf_counter()
            with self._lock:
                n, extractor = self.count, self.extractor_id
                ids, rows = self._ids[:n].copy(), self._matrix[:n].copy()
            graph = Index(
                ndim=self.dim, metric="ip", dtype="f16", connectivity=16, expansion_add=128, expansion_search=_ANN_EF
            )
            graph.add(ids, rows, threads=1)
            del rows
            with self._lock:
                if extractor != self.extractor_id or self._closed.is_set():
                    return
                current = set(self._ids[: self.count].tolist())
                for key in set(ids.tolist()) - current:
                    graph.remove(key)
                for key in current - set(ids.tolist()):
                    graph.add(key, self._matrix[self._rows[key]])
                self._ann = graph
                self.ann_build_seconds = time.perf_counter() - started
            log.info("similarity graph built", extra={"vectors": n, "seconds": round(self.ann_build_seconds, 1)})
        except Exception:
            log.exception("building the similarity graph failed; searches stay exact")
        finally:
            self._ann_building = False

    @property
    def ann_ready(self) -> bool:
        return self._ann is not None

    @property
    def memory_bytes(self) -> int:
        graph = int(self._ann.memory_usage) if self._ann is not None else 0
        return int(self._matrix.nbytes + self._ids.nbytes) + graph
