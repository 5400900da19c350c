"""Near-duplicate groups, found in the background and never by a scan of
all pairs per request.

Each stored image that has a perceptual hash and a feature vector is
compared once (``image_hashes.grouped``), in batches, with every stored
image (the :class:`DuplicateFinder` thread, the same in every replica;
its writes are idempotent):

- candidates by hash: images whose 64-bit hash shares one of five bands
  with the image's and differs in at most ``duplicate_hash_distance`` bits
  (re-encodes, resizes, format and metadata changes), found by sorting the
  band values (:func:`hash_candidate_pairs`, vectorized over the batch);
- candidates by features: the image's nearest neighbours in the
  similarity index at or above ``duplicate_neighbour_similarity`` (crops
  move the hash but barely the features);
- a candidate is confirmed when the cosine similarity of the two feature
  vectors is at least ``duplicate_min_similarity`` and one picture matches
  the other or a crop of it (``alignment.py``, at least
  ``duplicate_min_alignment``): pictures that merely look alike do not.

Confirmed pairs are stored (``duplicate_pairs``); a group is a connected
set of pairs, computed when /getduplicates asks (over the stored pairs
only), with the pairs an admin marked as not duplicates left out and no
group holding two images marked apart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import exists, func, or_, update
from sqlmodel import Session, select

from ..db import Database, insert_missing
from ..models import HASH_BANDS, DuplicatePair, Image, ImageFeatures, ImageHash, NotDuplicate, utc_now
from .alignment import crop_score
from .vectors import VectorIndex

log = logging.getLogger(__name__)

# Members of one band bucket compared with each other at most (a bucket of
# thousands of flat, featureless pictures would otherwise cost pairs by the
# million); a bucket's members further apart in the sorted order than this
# are not candidates through that band.
MAX_BUCKET_SPAN = 256


def hash_candidate_pairs(
    hashes: np.ndarray, is_query: np.ndarray, max_distance: int, max_span: int = MAX_BUCKET_SPAN
) -> np.ndarray:
    """Index pairs (i < j) of ``hashes`` (uint64) that share a band, differ
    in at most ``max_distance`` bits and include at least one query
    (``is_query``): an (m, 2) int64 array, each pair once."""
    n = len(hashes)
    found: list[np.ndarray] = []
    for start, width in HASH_BANDS:
        keys = (hashes >> np.uint64(start)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        for offset in range(1, min(max_span, n - 1) + 1):
            same = np.flatnonzero(sorted_keys[:-offset] == sorted_keys[offset:])
            if same.size == 0:
                break
            a, b = order[same], order[same + offset]
            keep = is_query[a] | is_query[b]
            a, b = a[keep], b[keep]
            close = np.bitwise_count(hashes[a] ^ hashes[b]) <= max_distance
            a, b = a[close], b[close]
            found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def confirm(
    pairs: Iterable[tuple[int, int]],
    vector_of: Callable[[Sequence[int]], dict[int, np.ndarray]],
    thumb_of: Callable[[Sequence[int]], dict[int, bytes]],
    settings: GroupingSettings,
) -> dict[tuple[int, int], float]:
    """The candidate pairs (image ids) that are the same picture, with
    their cosine similarity: both have unit vectors at least
    ``min_similarity`` alike, and one picture matches the other or a crop of
    it (:func:`alignment.crop_score` at least ``min_alignment``)."""
    alike: dict[tuple[int, int], float] = {}
    pairs = list(pairs)
    for start in range(0, len(pairs), 8192):
        chunk = pairs[start : start + 8192]
        vectors = vector_of(sorted({i for pair in chunk for i in pair}))
        for a, b in chunk:
            va, vb = vectors.get(a), vectors.get(b)
            if va is not None and vb is not None and (score := float(va @ vb)) >= settings.min_similarity:
                alike[(min(a, b), max(a, b))] = score
    if not alike:
        return {}
    thumbs = thumb_of(sorted({i for pair in alike for i in pair}))
    return {
        pair: score
        for pair, score in alike.items()
        if pair[0] in thumbs
        and pair[1] in thumbs
        and crop_score(thumbs[pair[0]], thumbs[pair[1]]) >= settings.min_alignment
    }


def _thumbs(db: Database, ids: Sequence[int]) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    with db.read() as session:
        for start in range(0, len(ids), 500):
            found.update(
                session.exec(
                    select(ImageHash.image_id, ImageHash.thumb).where(ImageHash.image_id.in_(ids[start : start + 500]))  # type: ignore[attr-defined]
                ).all()
            )
    return found


@dataclass(frozen=True)
class GroupingSettings:
    hash_distance: int
    min_similarity: float
    neighbour_similarity: float
    min_alignment: float
    batch_images: int
    # Nearest neighbours by features looked at per image (0: none, hash
    # candidates only).
    neighbours: int = 8


def group_batch(db: Database, index: VectorIndex, settings: GroupingSettings) -> int:
    """Compares the next batch of hashed images not compared yet (those with
    a vector from the index's extractor) with every stored image and stores
    the confirmed pairs; returns how many images it compared."""
    index.ensure()
    extractor = index.extractor_id
    if extractor is None:
        return 0
    with db.read() as session:
        has_vector = exists().where(
            ImageFeatures.image_id == ImageHash.image_id, ImageFeatures.extractor_id == extractor
        )
        queries = list(
            session.exec(
                select(ImageHash.image_id)
                .where(ImageHash.grouped == False, has_vector)  # noqa: E712
                .order_by(ImageHash.image_id)
                .limit(settings.batch_images)
            ).all()
        )
        if not queries:
            return 0
        rows = session.exec(select(ImageHash.image_id, ImageHash.dhash)).all()
    index.ensure(extractor, force=True)  # the queries' vectors are in it
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    hashes = np.array([row[1] for row in rows], dtype=np.int64).view(np.uint64)
    is_query = np.isin(ids, np.asarray(queries, dtype=np.int64))
    candidates = {(int(ids[i]), int(ids[j])) for i, j in hash_candidate_pairs(hashes, is_query, settings.hash_distance)}
    for a, b, _ in index.neighbours(queries, settings.neighbours, settings.neighbour_similarity):
        candidates.add((min(a, b), max(a, b)))
    confirmed = confirm(candidates, index.vectors, lambda ids: _thumbs(db, ids), settings)
    db.write(lambda session: _store(session, queries, confirmed))
    return len(queries)


def _store(session: Session, queries: Sequence[int], confirmed: dict[tuple[int, int], float]) -> None:
    live = set(session.exec(select(Image.id).where(Image.id.in_({i for pair in confirmed for i in pair}))).all())  # type: ignore[union-attr]
    pairs = [(a, b, s) for (a, b), s in confirmed.items() if a in live and b in live]
    if pairs:
        apart = _marked_apart(session, {i for a, b, _ in pairs for i in (a, b)})
        rows = [
            {"image_a": a, "image_b": b, "similarity": s, "found_at": utc_now()}
            for a, b, s in pairs
            if (a, b) not in apart
        ]
        for start in range(0, len(rows), 500):
            insert_missing(session, DuplicatePair, rows[start : start + 500])
    for start in range(0, len(queries), 500):
        session.exec(
            update(ImageHash).where(ImageHash.image_id.in_(queries[start : start + 500])).values(grouped=True)  # type: ignore[attr-defined]
        )


def _marked_apart(session: Session, image_ids: Iterable[int]) -> set[tuple[int, int]]:
    ids = sorted(set(image_ids))
    out: set[tuple[int, int]] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        out.update(
            session.exec(
                select(NotDuplicate.image_a, NotDuplicate.image_b).where(
                    or_(NotDuplicate.image_a.in_(chunk), NotDuplicate.image_b.in_(chunk))  # type: ignore[attr-defined]
                )
            ).all()
        )
    return out


def pending_count(session: Session) -> int:
    """Stored images not compared yet (no hash yet, or not grouped)."""
    hashed = session.exec(select(func.count()).select_from(ImageHash).where(ImageHash.grouped == True)).one()  # noqa: E712
    return session.exec(select(func.count()).select_from(Image)).one() - hashed


@dataclass(frozen=True)
class Group:
    image_ids: list[int]
    similarity: float


def groups(session: Session) -> list[Group]:
    """Every group (connected set of stored pairs, split so that no group
    holds two images marked apart), newest image first."""
    pairs = session.exec(select(DuplicatePair.image_a, DuplicatePair.image_b, DuplicatePair.similarity)).all()
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(root(x), []).append(x)
    apart = _marked_apart(session, parent) if parent else set()
    edges: dict[int, list[tuple[int, float]]] = {}
    for a, b, s in pairs:
        edges.setdefault(a, []).append((b, s))
        edges.setdefault(b, []).append((a, s))
    out: list[Group] = []
    for group in members.values():
        for part in _split(sorted(group), apart):
            if len(part) < 2:
                continue
            inside = set(part)
            scores = [s for x in part for y, s in edges.get(x, []) if y in inside]
            out.append(Group(sorted(part), min(scores) if scores else 0.0))
    out.sort(key=lambda g: -max(g.image_ids))
    return out


def _split(group: list[int], apart: set[tuple[int, int]]) -> list[list[int]]:
    """The group as parts none of which holds a pair marked apart (each
    image joins the first part it may join)."""
    parts: list[list[int]] = []
    for image in group:
        for part in parts:
            if not any((min(image, other), max(image, other)) in apart for other in part):
                part.append(image)
                break
        else:
            parts.append([image])
    return parts


class DuplicateFinder:
    """Runs :func:`group_batch` on a daemon thread until :meth:`stop`:
    again at once while there is work, else every ``poll_seconds`` or when
    woken (a new vector or hash)."""

    def __init__(self, db: Database, index: VectorIndex, settings: GroupingSettings, poll_seconds: float) -> None:
        self.db = db
        self.index = index
        self.settings = settings
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="duplicate-finder", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self.index.close()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                done = group_batch(self.db, self.index, self.settings)
                failures = 0
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("near-duplicate grouping failed; retrying")
                done = 0
            if done:
                log.info("compared images for near-duplicates", extra={"images": done})
                continue
            self._wake.wait(self.poll_seconds * (1 if not failures else min(2**failures, 30)))
            self._wake.clear()
