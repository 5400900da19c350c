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

From ``ann_min_vectors`` rows on, a search is two-stage: every row is
also kept as its projection on the library's first ``_REDUCED_DIMS``
principal components (fitted on a sample of the rows when the index
reaches the threshold and again whenever it has doubled since), a query
scores all of those (exact arithmetic on the reduced rows, 10x less memory
to read than the full rows) and the best 256 + 2 x k are then scored
exactly from the full rows. Deterministic, no graph to build, and a new
row is projected as it is added. Both products are computed without BLAS
threads (``np.einsum``): on a loaded machine a multi-threaded matrix-vector
product waits for its threads longer than it computes.

Memory: ``similar_max_vectors`` rows at most (1280 float32 values are 5 KiB
a row: 100000 images are 490 MiB; the projections add 512 bytes a row),
plus the ids; growing doubles the capacity (never past the bound). Past
the bound a search answers 503 (``similarity_index_full``) rather than
hold more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta

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
# The coarse stage: principal components kept per row, rows the basis is
# fitted on, and candidates scored exactly (per result, and at least).
_REDUCED_DIMS = 128
_FIT_SAMPLE = 8192
_CANDIDATES_PER_RESULT = 2
_CANDIDATES_MIN = 256


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


class VectorIndex:
    """Exact cosine search over one extractor's vectors (thread-safe)."""

    def __init__(
        self,
        db: Database,
        max_vectors: int,
        sync_seconds: float,
        ann_min_vectors: int = 0,
        reduced_dims: int = _REDUCED_DIMS,
        candidates_min: int = _CANDIDATES_MIN,
    ) -> None:
        self.db = db
        self.reduced_dims = reduced_dims
        self.candidates_min = candidates_min
        # From this many vectors on, searches score the rows' projections
        # first and only the best candidates exactly (0: always exact).
        self.ann_min_vectors = ann_min_vectors
        self._mean = np.zeros(0, dtype=np.float32)
        self._basis = np.zeros((0, 0), dtype=np.float32)  # dim x reduced; empty: exact search
        self._reduced = np.zeros((0, 0), dtype=np.float32)
        self._fitted_at = 0
        self.fit_seconds = 0.0
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
        self._drop_basis()
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
        self._maybe_fit()

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
            if self._basis.size:
                reduced = np.zeros((capacity, self._basis.shape[1]), dtype=np.float32)
                reduced[: self.count] = self._reduced[: self.count]
                self._reduced = reduced
        for n, image_id in enumerate(ids.tolist()):
            row = self._rows.get(image_id)
            if row is None:
                row = self.count
                self._rows[image_id] = row
                self._ids[row] = image_id
                self.count += 1
            self._matrix[row] = rows[n]
        if self._basis.size:
            changed = [self._rows[image_id] for image_id in ids.tolist()]
            self._reduced[changed] = self._project(rows)

    def remove(self, image_ids: Sequence[int]) -> None:
        """Drops rows (the last row moves into each gap)."""
        with self._lock:
            for image_id in image_ids:
                row = self._rows.pop(image_id, None)
                if row is None:
                    continue
                last = self.count - 1
                if row != last:
                    moved = int(self._ids[last])
                    self._matrix[row] = self._matrix[last]
                    if self._basis.size:
                        self._reduced[row] = self._reduced[last]
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
        self,
        query: np.ndarray,
        k: int,
        exclude: int | None = None,
        allowed: np.ndarray | None = None,
        exact: bool = False,
    ) -> list[tuple[int, float]]:
        """The ``k`` most similar (image id, cosine) to ``query``, most
        similar first; only ids in ``allowed`` when given (sorted ids, or
        booleans indexed by image id: a filter's bitset unpacked). Past
        ``ann_min_vectors`` the candidates come from the projections (the
        scores are always exact); ``exact`` scores every row instead."""
        with self._lock:
            n = self.count
            if n == 0 or k <= 0:
                return []
            unit = unit_rows(np.asarray(query, dtype=np.float32).reshape(1, -1))[0]
            if unit.shape[0] != self.dim:
                return []
            ids = self._ids[:n]
            two_stage = bool(self._basis.size) and not exact
            if two_stage:
                projected = np.einsum("j,jk->k", unit - self._mean, self._basis).astype(np.float32, copy=False)
                scores = np.einsum("ij,j->i", self._reduced[:n], projected)
            else:
                scores = np.einsum("ij,j->i", self._matrix[:n], unit)
            if allowed is not None:
                if allowed.dtype == np.bool_:
                    keep = np.zeros(n, dtype=bool)
                    inside = ids < allowed.size
                    keep[inside] = allowed[ids[inside]]
                else:
                    keep = np.isin(ids, allowed, assume_unique=True)
                scores = np.where(keep, scores, -np.inf)
            if exclude is not None and exclude in self._rows:
                scores[self._rows[exclude]] = -np.inf
            if two_stage:
                c = min(n, self.candidates_min + _CANDIDATES_PER_RESULT * k)
                rows = np.argpartition(-scores, c - 1)[:c] if c < n else np.arange(n)
                rows = rows[np.isfinite(scores[rows])]
                scores = np.full(n, -np.inf, dtype=np.float32)
                # einsum, not @: no BLAS threads (a threaded product of these
                # 1,216 rows for a filtered search took 12 ms on the loaded
                # machine, einsum 1 ms).
                scores[rows] = np.einsum("ij,j->i", self._matrix[rows], unit)
            k = min(k, n)
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return [(int(ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def neighbours(self, image_ids: Sequence[int], k: int, min_similarity: float) -> list[tuple[int, int, float]]:
        """For each of ``image_ids`` with a row, its up to ``k`` nearest other
        images at or above ``min_similarity``: (image, other, cosine). One
        matrix product per block of 64 queries, each outside the lock (a
        search is not held up by a long backlog; a row moved meanwhile only
        makes a candidate, which is confirmed again). With the projections
        (past ``ann_min_vectors``) the block is scored on them and each
        query's candidates exactly, as :meth:`search` does: a tenth of the
        bytes read per query (43 ms an image at 100,000 vectors exact)."""
        out: list[tuple[int, int, float]] = []
        for start in range(0, len(image_ids), 64):
            with self._lock:
                n, matrix, reduced = self.count, self._matrix, self._reduced
                two_stage = bool(self._basis.size)
                ids = self._ids[:n].copy()
                block = [i for i in image_ids[start : start + 64] if i in self._rows]
                rows = [self._rows[i] for i in block]
            kk = min(k, n - 1)
            if not block or kk <= 0:
                continue
            if two_stage:
                found = self._two_stage_neighbours(matrix, reduced, n, rows, kk)
            else:
                scores = matrix[rows] @ matrix[:n].T
                scores[np.arange(len(rows)), rows] = -np.inf
                top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
                found = [(top[q], scores[q, top[q]]) for q in range(len(rows))]
            for image_id, (cols, sims) in zip(block, found, strict=True):
                for col, score in zip(cols.tolist(), sims.tolist(), strict=True):
                    if score >= min_similarity:
                        out.append((image_id, int(ids[col]), float(score)))
        return out

    def _two_stage_neighbours(
        self, matrix: np.ndarray, reduced: np.ndarray, n: int, rows: list[int], k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query row: the columns of its ``k`` nearest other rows and their
        exact cosines, from the best candidates by projection."""
        rough = reduced[rows] @ reduced[:n].T
        rough[np.arange(len(rows)), rows] = -np.inf
        c = min(n - 1, self.candidates_min + _CANDIDATES_PER_RESULT * k)
        candidates = np.argpartition(-rough, c - 1, axis=1)[:, :c]
        found = []
        for q, row in enumerate(rows):
            cols = candidates[q]
            exact = np.einsum("ij,j->i", matrix[cols], matrix[row])
            best = np.argpartition(-exact, k - 1)[:k] if k < len(cols) else np.arange(len(cols))
            found.append((cols[best], exact[best]))
        return found

    # ---- the reduced rows ----------------------------------------------------------

    def _project(self, unit: np.ndarray) -> np.ndarray:
        return ((unit - self._mean) @ self._basis).astype(np.float32, copy=False)

    def _drop_basis(self) -> None:
        self._mean = np.zeros(0, dtype=np.float32)
        self._basis = np.zeros((0, 0), dtype=np.float32)
        self._reduced = np.zeros((0, 0), dtype=np.float32)
        self._fitted_at = 0

    def _maybe_fit(self) -> None:
        """Fits the projection when the index reaches ``ann_min_vectors``
        and again when it has doubled since (caller holds the lock)."""
        n = self.count
        if not self.ann_min_vectors or n < self.ann_min_vectors or self.dim <= self.reduced_dims:
            return
        if self._basis.size and n < 2 * self._fitted_at:
            return
        started = time.perf_counter()
        sample = self._matrix[: n : max(1, n // _FIT_SAMPLE)].astype(np.float64)  # evenly spread, deterministic
        mean = sample.mean(axis=0)
        centred = sample - mean
        _, vectors = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        self._mean = mean.astype(np.float32)
        self._basis = np.ascontiguousarray(vectors[:, ::-1][:, : self.reduced_dims], dtype=np.float32)
        reduced = np.zeros((len(self._ids), self.reduced_dims), dtype=np.float32)
        for start in range(0, n, 16384):
            reduced[start : min(n, start + 16384)] = self._project(self._matrix[start : min(n, start + 16384)])
        self._reduced = reduced
        self._fitted_at = n
        self.fit_seconds = time.perf_counter() - started
        log.info("similarity projection fitted", extra={"vectors": n, "seconds": round(self.fit_seconds, 2)})

    @property
    def two_stage(self) -> bool:
        return bool(self._basis.size)

    @property
    def memory_bytes(self) -> int:
        return int(self._matrix.nbytes + self._ids.nbytes + self._reduced.nbytes + self._basis.nbytes)
