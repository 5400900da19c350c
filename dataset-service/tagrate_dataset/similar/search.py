"""GetSimilar: the stored images most similar in content to a stored image
or to a feature vector, through the similarity index (``vectors.py``),
restricted by the listing's own filter builder (tag filters and ``rated``
exactly as GetUserData applies them: ``library/filtered.py``, from the
cached bitsets when the filter is one they answer), with the user's rating
and current prediction per result."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, func, text
from sqlmodel import select

from tagrate_common.errors import Conflict, InvalidArgument, Unavailable
from tagrate_common.userdata import RatedFilter, TagFilter

from .. import records
from ..db import Database
from ..library import filtered as listing_filter
from ..library.filtered import Kept
from ..models import ImageFeatures
from .vectors import VectorIndex

# Stand-in user id when no user is given: matches no rating.
_NOBODY = -1
# A library with at most this many vectors has its index built within the
# first request (a second or so); a larger one in the background, answering
# 503 until it is ready (a build reads every vector: ~0.5 GB at 100k images).
_BUILD_INLINE = 20_000
# A filtered search looks at this many times ``limit`` nearest images first.
_PREFILTER = 20
# Searches again (more results asked for) when deleted images were met.
_ATTEMPTS = 3


@dataclass(frozen=True)
class SimilarResult:
    image: str
    similarity: float
    rating: float | None
    predicted: float | None


@dataclass(frozen=True)
class Query:
    image: str  # "" for a search by vector
    vector: np.ndarray | None
    extractor_id: str
    user: str
    limit: int
    tags: TagFilter
    rated: RatedFilter
    # Whether tag_members and the cached bitsets may answer the filter
    # (setting ``tag_members``; the same images either way).
    members: bool = True


def _stored_vectors(db: Database, extractor_id: str) -> int:
    with db.read() as session:
        return session.exec(
            select(func.count()).select_from(ImageFeatures).where(ImageFeatures.extractor_id == extractor_id)
        ).one()


# The query image and its newest vector, in the same statement as the
# preamble: its id NULL when there is no such image, its vector NULL when
# the image has none yet.
_IMAGE = (
    "SELECT i.id AS image_id, f.extractor_id AS extractor_id, f.vector AS vector FROM images i "
    "LEFT JOIN image_features f ON f.image_id = i.id WHERE i.name = :image ORDER BY f.created_at DESC LIMIT 1"
)


def similar(db: Database, index: VectorIndex, query: Query) -> tuple[str, list[SimilarResult]]:
    """The answer to GetSimilar: (the query image's name or "", results).

    What the search needs from the database before it runs (the user's id
    and serving version, the query image and its vector, the filter's
    preamble) is one statement, so one snapshot on either database; the
    results' names, ratings and predictions another (``_resolve``)."""
    if not query.user and query.rated is not RatedFilter.ALL:
        raise InvalidArgument("'rated' other than all needs a 'user'", "invalid_rated")
    user_id, version, keeps = _NOBODY, "", None
    extractor_id, vector = query.extractor_id, query.vector
    exclude: int | None = None
    filtering = listing_filter.filters(query.tags, query.rated)
    if query.user or query.image or filtering:
        # The listing's preamble reads the user (by name; the newcomer form
        # gives one row also when there is none) and the serving versions.
        head = listing_filter.preamble(query.tags if filtering else TagFilter(), query.rated, bool(query.user))
        sql = head.sql
        if query.image:
            sql = (
                "SELECT p.*, q.image_id AS q_image, q.extractor_id AS q_extractor, q.vector AS q_vector "
                f"FROM ({sql}) p LEFT JOIN ({_IMAGE}) q ON 1 = 1"
            )
        with db.read_connection() as conn:
            row = conn.execute(text(sql), {**head.params, "subject": query.user, "image": query.image}).one()
            if query.user:
                if row.user_id is None:
                    raise records.no_user(query.user)
                user_id, version = row.user_id, row.mine or row.everyone or ""
            if query.image:
                if row.q_image is None:
                    raise records.no_image(query.image)
                if row.q_vector is None:
                    raise Conflict(
                        f"the features of image '{query.image}' are not computed yet; try again shortly",
                        "features_pending",
                    )
                exclude = row.q_image
                extractor_id, vector = row.q_extractor, np.frombuffer(row.q_vector, dtype="<f4")
            if filtering:
                # The filter (and, for any-source tags, its bitset, read on
                # this connection when not cached) from the same row.
                keeps = listing_filter.kept_from(row, conn, head.flt, user_id, query.rated, query.members)
    assert vector is not None
    if (
        index.extractor_id != extractor_id
        and index.building is None
        and _stored_vectors(db, extractor_id) <= _BUILD_INLINE
    ):
        index.ensure(extractor_id)  # a small library: built within the request
    if not index.ready_for(extractor_id):
        raise Unavailable(
            "the similarity index is being built from the stored feature vectors; try again in a few seconds",
            "similarity_index_building",
        )
    index.ensure(extractor_id)
    allowed: np.ndarray | None = None
    if keeps is not None and keeps.flags is not None:
        # A filter the bitsets answer: the search runs within it (its
        # flags mask the scores), as a search of that smaller library would.
        allowed = keeps.flags
        if not allowed.any():
            return query.image, []
    elif keeps is not None:
        if keeps.flt is None:  # an included tag nobody has
            return query.image, []
        # The nearest images first, filtered afterwards (one query over a
        # few hundred ids); only when too few of them pass is the whole
        # filtered set read and the search run within it.
        hits = index.search(vector, _PREFILTER * query.limit, exclude=exclude)
        passing = set(_filtered(db, keeps, [i for i, _ in hits]).tolist())
        kept = [(i, score) for i, score in hits if i in passing]
        if len(kept) >= query.limit or len(hits) < _PREFILTER * query.limit:
            return query.image, _resolve(db, kept[: query.limit + 8], user_id, version)[0][: query.limit]
        allowed = _filtered(db, keeps, None)
        if allowed.size == 0:
            return query.image, []
    want = query.limit
    results: list[SimilarResult] = []
    for _ in range(_ATTEMPTS):
        hits = index.search(vector, want + 8, exclude=exclude, allowed=allowed)
        results, gone = _resolve(db, hits, user_id, version)
        if not gone or len(results) >= query.limit or len(hits) < want + 8:
            return query.image, results[: query.limit]
        index.remove(gone)
        want += len(gone)
    return query.image, results[: query.limit]


def _filtered(db: Database, keeps: Kept, among: Sequence[int] | None) -> np.ndarray:
    with db.snapshot() as session:
        return keeps.every(session) if among is None else keeps.among(session, among)


def _resolve(
    db: Database, hits: Sequence[tuple[int, float]], user_id: int, version: str
) -> tuple[list[SimilarResult], list[int]]:
    """Names, ratings and predictions of the hits (one statement); ids of
    deleted images apart."""
    ids = [image_id for image_id, _ in hits]
    if not ids:
        return [], []
    predicted, join = "NULL", ""
    if version:
        predicted = "p.score"
        join = " LEFT JOIN predictions p ON p.user_id = :u AND p.image_id = i.id AND p.model_version = :v"
    sql = text(
        f"SELECT i.id, i.name, r.rating, {predicted} FROM images i "
        f"LEFT JOIN ratings r ON r.user_id = :u AND r.image_id = i.id{join} WHERE i.id IN :ids"
    ).bindparams(bindparam("ids", expanding=True))
    with db.read_connection() as conn:
        found = {row[0]: row[1:] for row in conn.execute(sql, {"u": user_id, "v": version, "ids": ids})}
    results = [
        SimilarResult(found[i][0], max(0.0, min(1.0, score)), found[i][1], found[i][2])
        for i, score in hits
        if i in found
    ]
    return results, [i for i, _ in hits if i not in found]
