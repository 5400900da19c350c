"""The taste loop's queries: plain functions that take a Session.

Bounded whatever the library's size: at most :data:`CANDIDATES` unrated
images are considered for rating next (a sample in a pseudo-random order
seeded by the user and their model version, so the same state gives the
same queue and a retrain a new one), the :data:`RATED` most recent ratings
with vectors are compared against, and every vector is read by primary key
after its row was chosen, so no scan reads the vectors' bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, text
from sqlmodel import Session, col, select

from tagrate_common import ratenext
from tagrate_common.errors import Conflict
from tagrate_common.tagfilter import parse_filter
from tagrate_common.userdata import TagFilter

from ..models import ALL_SUBJECT, Image, ImageFeatures, ImageTag, Prediction, Rating, Tag, TrainedSnapshot
from ..records import current_tagger_model, require_image, require_user
from ..tags import filtersql

CANDIDATES = 2000  # unrated images sampled for a choice
RATED = 2000  # most recent ratings compared against (novelty, neighbours)
CLUSTERED_RATINGS = 200  # most recent rated images clustered with the candidates
TAG_MIN_IMAGES = 3  # a tag's effect needs this many scored images with it
MAX_TAGS = 10
_PRIME = 2_147_483_647  # 2^31 - 1: image ids times a multiplier stay below 2^62


def serving_version(session: Session, user: str) -> str:
    """The model version serving ``user``: their own trained model's, else
    the global one's, else ""."""
    for subject in (user, ALL_SUBJECT):
        trained = session.get(TrainedSnapshot, subject)
        if trained is not None and trained.model_version:
            return trained.model_version
    return ""


def _vectors(session: Session, image_ids: Sequence[int], extractor_id: str) -> dict[int, np.ndarray]:
    found: dict[int, np.ndarray] = {}
    for begin in range(0, len(image_ids), 500):
        chunk = list(image_ids[begin : begin + 500])
        rows = session.exec(
            select(ImageFeatures.image_id, ImageFeatures.vector).where(
                col(ImageFeatures.image_id).in_(chunk), ImageFeatures.extractor_id == extractor_id
            )
        ).all()
        for image_id, vector in rows:
            found[image_id] = np.frombuffer(vector, dtype="<f4")
    return found


def _predictions(session: Session, user_id: int, image_ids: Sequence[int], version: str) -> dict[int, float]:
    if not version or not image_ids:
        return {}
    rows = session.exec(
        select(Prediction.image_id, Prediction.score).where(
            Prediction.user_id == user_id,
            col(Prediction.image_id).in_(list(image_ids)),
            Prediction.model_version == version,
        )
    ).all()
    return {image_id: float(score) for image_id, score in rows}


def _rated(session: Session, user_id: int, extractor_id: str) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The user's most recent ratings that have vectors: ids, vectors, ratings."""
    rows = session.exec(
        select(Rating.image_id, Rating.rating)
        .where(Rating.user_id == user_id)
        .order_by(col(Rating.rated_at).desc(), col(Rating.image_id).desc())
        .limit(RATED)
    ).all()
    vectors = _vectors(session, [image_id for image_id, _ in rows], extractor_id)
    kept = [(image_id, rating) for image_id, rating in rows if image_id in vectors]
    if not kept:
        return [], np.empty((0, 0), np.float32), np.empty(0)
    ids = [image_id for image_id, _ in kept]
    return ids, np.stack([vectors[i] for i in ids]), np.array([rating for _, rating in kept])


@dataclass(frozen=True)
class RateNextItem:
    image: str
    predicted: float | None
    reason: str


@dataclass(frozen=True)
class RateNext:
    strategy: str
    model_version: str
    items: list[RateNextItem]


def _seed(user: str, version: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{user}\0{version}".encode()).digest()[:8], "big")


def _tag_conditions(
    session: Session, include: Sequence[str], exclude: Sequence[str], version: str
) -> tuple[str, dict] | None:
    """SQL conditions on ``f.image_id`` for the tag filter and their
    parameters: the listing's own (``tags/filtersql.py``: tags from every
    source, aliases and implications, ``manual:``/``taught:``/``model:``,
    ``~`` groups, ``rating:``/``predicted:`` against the user's ratings and
    the predictions serving them, the statement's ``:u``). None when nothing can match (an included
    tag nobody has); unknown excluded tags are ignored. 400 for a malformed
    filter item, as the listing."""
    flt = filtersql.resolve(session, parse_filter(TagFilter.of(include, exclude)))
    if flt is None:
        return None
    if not flt:
        return "", {}
    model = current_tagger_model(session)
    model_key = (model.id, model.threshold) if model is not None and model.id is not None else None
    return flt.where("f.image_id"), {**filtersql.model_params(model_key), "v": version, **flt.params}


def rate_next(
    session: Session,
    user: str,
    extractor_id: str,
    limit: int,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
) -> RateNext:
    """Up to ``limit`` unrated images for ``user`` to rate next, best first
    (see :mod:`tagrate_common.ratenext`), among the images the tag filter
    keeps. NotFound for an unknown user."""
    owner = require_user(session, user)
    assert owner.id is not None
    version = serving_version(session, user)
    seed = _seed(user, version)
    multiplier = 1 + seed % (_PRIME - 1)
    offset = (seed >> 32) % _PRIME
    tags = _tag_conditions(session, include, exclude, version)
    if tags is None:
        return RateNext(ratenext.SERVED, version, [])
    candidates = session.connection().execute(
        text(
            "SELECT f.image_id FROM image_features f WHERE f.extractor_id = :x "
            "AND NOT EXISTS (SELECT 1 FROM ratings q WHERE q.user_id = :u AND q.image_id = f.image_id)"
            f"{tags[0]} ORDER BY (CAST(f.image_id AS BIGINT) * :a + :b) % :p, f.image_id LIMIT :n"
        ),
        {"x": extractor_id, "u": owner.id, "a": multiplier, "b": offset, "p": _PRIME, "n": CANDIDATES, **tags[1]},
    )
    candidate_ids = [row[0] for row in candidates]
    vectors = _vectors(session, candidate_ids, extractor_id)
    candidate_ids = [i for i in candidate_ids if i in vectors]
    if not candidate_ids:
        return RateNext(ratenext.SERVED, version, [])
    rated_ids, rated, ratings = _rated(session, owner.id, extractor_id)
    dims = len(vectors[candidate_ids[0]])
    if len(rated_ids) and rated.shape[1] != dims:
        rated_ids, rated, ratings = [], np.empty((0, dims), np.float32), np.empty(0)
    points = np.stack([vectors[i] for i in candidate_ids])
    if not len(rated_ids):
        rated = np.empty((0, dims), np.float32)
    choice = ratenext.choose(points, rated[:CLUSTERED_RATINGS], ratings[:CLUSTERED_RATINGS], limit, seed=seed % 2**32)
    chosen = [candidate_ids[i] for i in choice.indices]
    names = dict(session.exec(select(Image.id, Image.name).where(col(Image.id).in_(chosen))).all())
    predicted = _predictions(session, owner.id, chosen, version)
    items = [
        RateNextItem(names[image_id], predicted.get(image_id), reason)
        for image_id, reason in zip(chosen, choice.reasons, strict=True)
        if image_id in names
    ]
    return RateNext(choice.strategy, version, items)


@dataclass(frozen=True)
class Neighbour:
    image: str
    rating: float
    similarity: float


@dataclass(frozen=True)
class TagEffect:
    tag: str
    effect: float
    images: int


@dataclass(frozen=True)
class Explanation:
    image: str
    predicted: float | None
    model_version: str
    neighbours: list[Neighbour]
    tags: list[TagEffect]


def explain(session: Session, user: str, image: str, extractor_id: str, limit: int) -> Explanation:
    """The ``limit`` rated images of ``user`` most similar to ``image`` (by
    cosine similarity of the feature vectors, most similar first, the image
    itself left out), and the image's tags by how far the user's predictions
    of the images carrying them sit from the mean of all their predictions.
    NotFound for an unknown user or image; Conflict when the image has no
    vector yet."""
    owner = require_user(session, user)
    stored = require_image(session, image)
    assert owner.id is not None and stored.id is not None
    version = serving_version(session, user)
    own = _vectors(session, [stored.id], extractor_id).get(stored.id)
    if own is None:
        raise Conflict(f"the features of '{image}' are not computed yet; try again shortly", "features_pending")
    rated_ids, rated, ratings = _rated(session, owner.id, extractor_id)
    neighbours: list[Neighbour] = []
    keep = [n for n, image_id in enumerate(rated_ids) if image_id != stored.id and rated.shape[1] == len(own)]
    if keep:
        similarity = ratenext.normalised(rated[keep]) @ ratenext.normalised(own[None, :])[0]
        order = np.argsort(-similarity, kind="stable")[:limit]
        ids = [rated_ids[keep[i]] for i in order]
        names = dict(session.exec(select(Image.id, Image.name).where(col(Image.id).in_(ids))).all())
        neighbours = [
            Neighbour(names[rated_ids[keep[i]]], float(ratings[keep[i]]), float(similarity[i]))
            for i in order
            if rated_ids[keep[i]] in names
        ]
    predicted = _predictions(session, owner.id, [stored.id], version).get(stored.id)
    return Explanation(image, predicted, version, neighbours, _tag_effects(session, owner.id, stored.id, version))


def _tag_effects(session: Session, user_id: int, image_id: int, version: str) -> list[TagEffect]:
    """The image's tags (current tagger model, at or above its threshold),
    each with the mean of the user's current predictions over the images
    carrying it minus the mean over all of them; the largest moves first."""
    model = current_tagger_model(session)
    if model is None or not version:
        return []
    scored = (Prediction.user_id == user_id) & (Prediction.model_version == version)
    overall = session.exec(select(func.avg(Prediction.score)).where(scored)).one()
    if overall is None:
        return []
    tags = session.exec(
        select(ImageTag.tag_id).where(
            ImageTag.image_id == image_id, ImageTag.tagger_model_id == model.id, ImageTag.score >= model.threshold
        )
    ).all()
    if not tags:
        return []
    rows = session.exec(
        select(Tag.name, func.avg(Prediction.score), func.count())
        .select_from(ImageTag)
        .join(Tag, col(Tag.id) == col(ImageTag.tag_id))
        .join(Prediction, (col(Prediction.image_id) == col(ImageTag.image_id)) & scored)
        .where(
            col(ImageTag.tag_id).in_(list(tags)),
            ImageTag.tagger_model_id == model.id,
            ImageTag.score >= model.threshold,
        )
        .group_by(Tag.name)
    ).all()
    effects = [
        TagEffect(name, float(mean) - float(overall), int(count))
        for name, mean, count in rows
        if count >= TAG_MIN_IMAGES
    ]
    return sorted(effects, key=lambda e: (-abs(e.effect), e.tag))[:MAX_TAGS]
