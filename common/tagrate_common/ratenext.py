"""Which images a user should rate next to teach their model the most: the
choice behind /getratenext, shared by the dataset service (which serves it)
and ``bench learning`` (which measured it against random picks).

Inputs are feature vectors (the rater's extractor's, as cached for
training): those of candidate images the user has not rated, and those of
the images they rated with their ratings. Everything is numpy on a few
thousand rows at most (the caller bounds them), in 128 projected dimensions
where it clusters.

Served (:data:`SERVED`): ``typical-and-variance``, below. Its first half,
and all of it under :data:`SWITCH_AT` ratings, is
``typical-clusters``, TypiClust (Hacohen, Dekel and Weinshall, "Active
learning on a budget", 2022), made for few ratings: the candidates and the
rated images are clustered into (rated + wanted) groups by k-means; from the
largest groups holding nothing rated the most *typical* candidate (closest
to its group's others) is taken, one per group. So the picks are diverse
(one per group, never twenty near-identical images while a group is
unrated) and representative (not outliers). Without ratings it is the same
over the library: a cold-start spread.

Measured, not served: ``typical-then-variance``, typical-clusters under
:data:`SWITCH_AT` ratings, then ``variance-reduction``, transductive
experimental design (Yu, Bi and Tresp, 2006) for the ridge head
(:func:`variance_reduction`). On the held-out seed it was no better than
typical-clusters overall (better for shared and orthogonal users, worse for
opposite and narrow ones), and its picks of the end-to-end test's scenes
spread over too narrow a band of their taste parameter (0.39 < 0.5).

Served, because it measured best against random picks on the issue's
targets (docs/taste-loop.md, "Hybrids"; ``bench learning --active``):
``typical-and-variance`` (under :data:`SWITCH_AT` ratings typical-clusters,
then half of each call's picks typical-clusters', the rest
variance-reduction's), the best on the tuning users; on the held-out ones
it reached random's 100-rating Spearman by 60 ratings for shared and
orthogonal users (typical-clusters alone: 80 and 70), level for opposite
ones (70) and later for narrow ones (70 against 40), never more than 0.01
below random but at the cold start both share. Measured, not served:
``typical-informative`` (:func:`typical_informative`: TypiClust with twice
as many groups as picks, the open groups weighed by size x the ridge
posterior's variance x how extreme the model predicts them): no better.

Measured and kept for the benchmark, not served: ``ensemble-coverage``
(informative: the spread of a bootstrap ensemble of ridge heads' predictions
x the cosine distance to anything rated or chosen, greedily; under
:data:`MIN_RATINGS` ratings the distance alone, ``coverage``), which picked
atypical images and did worse than random.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENSEMBLE = "ensemble-coverage"
COVERAGE = "coverage"
TYPICAL = "typical-clusters"
VARIANCE = "variance-reduction"
SCHEDULE = "typical-then-variance"
INFORMATIVE = "typical-informative"
ALTERNATE = "typical-and-variance"
RANDOM = "random"
STRATEGIES = (ENSEMBLE, COVERAGE, TYPICAL, VARIANCE, SCHEDULE, INFORMATIVE, ALTERNATE, RANDOM)
# What /getratenext serves: the strategy that measured best against random
# picks (docs/taste-loop.md; bench learning --active). Not SCHEDULE: see above.
SERVED = ALTERNATE
PROJECTED = 128  # dimensions the clustering works in (a fixed random projection)
KMEANS_ROUNDS = 8

SWITCH_AT = 20  # the schedule: typical-clusters under this many ratings, variance-reduction from it
PENALTY = 0.1  # variance-reduction's ridge penalty, in units of a candidate's mean squared norm (1, 10: worse)
TOP_PICKS = 0  # variance-reduction's picks among the highest predicted (with ratings)
NEAR = 0.9  # cosine similarity from which two images count as near-identical (one per call while others remain)

CLUSTERS_PER_PICK = 2  # typical-informative: (rated + this x wanted) groups once there are ratings
INFORMED_FROM = 10  # typical-informative: the model weighs the groups from this many ratings (a first retraining)

MIN_RATINGS = 5  # fewer: the ensemble would be noise; the spread alone decides
HEADS = 8  # bootstrap heads
EPSILON = 1e-9


@dataclass(frozen=True)
class Choice:
    """The chosen candidates' row numbers, best first, and why each."""

    indices: list[int]
    reasons: list[str]
    strategy: str


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (cosine geometry), float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, EPSILON)


def _nearest_distance(points: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Each point's cosine distance to its nearest anchor (2 with none)."""
    if len(anchors) == 0:
        return np.full(len(points), 2.0, dtype=np.float32)
    best = np.full(len(points), -1.0, dtype=np.float32)
    for begin in range(0, len(anchors), 1024):  # bounded memory: points x 1024 at a time
        best = np.maximum(best, (points @ anchors[begin : begin + 1024].T).max(axis=1))
    return np.clip(1.0 - best, 0.0, 2.0)


def disagreement(candidates: np.ndarray, rated: np.ndarray, ratings: np.ndarray, seed: int = 0) -> np.ndarray:
    """The spread (standard deviation) of a bootstrap ensemble of ridge heads'
    predictions for each candidate. Ridge in its dual form on standardised
    features with the penalty the feature count (the benchmark's fixed-penalty
    ridge): an n x n solve per head, n the ratings."""
    rng = np.random.default_rng(seed)
    x = np.asarray(rated, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    x = (x - mean) / scale
    c = (np.asarray(candidates, dtype=np.float64) - mean) / scale
    y = np.asarray(ratings, dtype=np.float64)
    n, d = x.shape
    predictions = np.empty((HEADS, len(c)))
    for h in range(HEADS):
        take = rng.integers(0, n, n)
        xb, yb = x[take], y[take]
        centred = yb - yb.mean()
        gram = xb @ xb.T + float(d) * np.eye(n)
        weights = xb.T @ np.linalg.solve(gram, centred)
        predictions[h] = c @ weights + yb.mean()
    return predictions.std(axis=0)


def _project(points: np.ndarray, seed: int) -> np.ndarray:
    """Unit rows projected to :data:`PROJECTED` dimensions (Johnson-Lindenstrauss:
    distances kept to a few percent), so clustering costs little."""
    if points.shape[1] <= PROJECTED:
        return points
    matrix = np.random.default_rng([seed, 7]).normal(size=(points.shape[1], PROJECTED)).astype(np.float32)
    return points @ (matrix / np.sqrt(PROJECTED))


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Cluster labels of ``points`` by k-means (k-means++ seeding, a few Lloyd rounds)."""
    centres = [points[rng.integers(len(points))]]
    nearest = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        pick = rng.choice(len(points), p=nearest / total) if total > 0 else rng.integers(len(points))
        centres.append(points[pick])
        nearest = np.minimum(nearest, ((points - points[pick]) ** 2).sum(axis=1))
    c = np.stack(centres)
    for _ in range(KMEANS_ROUNDS):
        distances = (points**2).sum(1)[:, None] - 2 * points @ c.T + (c**2).sum(1)[None, :]
        labels = distances.argmin(axis=1)
        for j in range(k):
            members = points[labels == j]
            if len(members):
                c[j] = members.mean(axis=0)
    distances = (points**2).sum(1)[:, None] - 2 * points @ c.T + (c**2).sum(1)[None, :]
    return distances.argmin(axis=1)


def typical_clusters(candidates: np.ndarray, rated: np.ndarray, limit: int, seed: int) -> list[int]:
    """TypiClust (Hacohen et al., 2022: active learning on a small budget):
    the candidates and the rated images are clustered into (rated + limit)
    clusters; from the largest clusters holding nothing rated, the most
    typical candidate (the one closest to its cluster's others) is taken, one
    per cluster, then from the largest clusters whatever is left."""
    rng = np.random.default_rng(seed)
    points = _project(
        np.concatenate([normalised(candidates), normalised(rated)]) if len(rated) else normalised(candidates), seed
    )
    n = len(candidates)
    k = max(1, min(len(points), len(rated) + limit))
    labels = _kmeans(points, k, rng)
    rated_clusters = set(labels[n:].tolist())
    sizes = np.bincount(labels, minlength=k)
    order = sorted(range(k), key=lambda j: (j in rated_clusters, -sizes[j]))
    chosen: list[int] = []
    taken = np.zeros(n, dtype=bool)
    while len(chosen) < limit:
        before = len(chosen)
        for j in order:
            if len(chosen) >= limit:
                break
            members = np.flatnonzero((labels[:n] == j) & ~taken)
            if not len(members):
                continue
            inside = points[labels == j]
            block = points[members]
            spread = ((block[:, None, :] - inside[None, : min(len(inside), 200), :]) ** 2).sum(-1).mean(axis=1)
            best = int(members[int(np.argmin(spread))])
            chosen.append(best)
            taken[best] = True
        if len(chosen) == before:
            break
    return chosen


def typical_informative(
    candidates: np.ndarray, rated: np.ndarray, ratings: np.ndarray, limit: int, seed: int
) -> tuple[list[int], list[str]]:
    """TypiClust with more groups than picks, the groups weighed by what the
    ridge head would learn: the candidates and the rated images are
    clustered into (rated + :data:`CLUSTERS_PER_PICK` x ``limit``) groups
    (rated + ``limit`` under :data:`INFORMED_FROM` ratings: typical-clusters'
    rule, its cold start included); each group
    holding nothing rated offers its most typical candidate (the nearest to
    the group's centre); greedily, the offer with the largest ``size x
    variance x (1 + extremeness)`` is taken, where ``variance`` is the
    ridge posterior's predictive variance ``x'A^-1 x`` in the head's
    geometry (:func:`_design`; ``A`` the penalty, :data:`PENALTY` times a
    candidate's mean squared norm, plus the rated rows' and every pick's
    outer products, so two picks never teach the same direction) and
    ``extremeness`` how far a ridge fit on the ratings predicts it from the
    candidates' median, in standard deviations (a ranking needs the images
    the model puts high and low both checked). Under :data:`INFORMED_FROM`
    ratings the size alone decides. When the open groups run out, the
    largest groups' typical candidates, round robin."""
    n = len(candidates)
    rng = np.random.default_rng(seed)
    points = _project(
        np.concatenate([normalised(candidates), normalised(rated)]) if len(rated) else normalised(candidates), seed
    )
    informed = len(rated) >= INFORMED_FROM
    k = max(1, min(len(points), len(rated) + (CLUSTERS_PER_PICK if informed else 1) * limit))
    labels = _kmeans(points, k, rng)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    centres = np.zeros((k, points.shape[1]), dtype=np.float64)
    np.add.at(centres, labels, points)
    centres /= np.maximum(sizes, 1.0)[:, None]
    away = ((points[:n] - centres[labels[:n]]) ** 2).sum(axis=1)  # mean distance to the group's others, less a constant
    typical = np.full(k, -1)
    for i in np.argsort(-away):  # the last write per group is its most typical candidate
        typical[labels[i]] = i
    rated_groups = np.zeros(k, dtype=bool)
    rated_groups[labels[n:]] = True
    offers = np.flatnonzero(~rated_groups & (typical >= 0))
    weight = np.ones(len(offers))
    if informed:
        everything, r = _design(candidates, rated, seed)
        c = everything[typical[offers]]
        penalty = PENALTY * float((everything**2).sum(axis=1).mean())
        a_inv = np.linalg.inv(penalty * np.eye(c.shape[1]) + r.T @ r)
        y = np.asarray(ratings, dtype=np.float64)
        head = a_inv @ (r.T @ (y - y.mean()))  # the ridge fit (primal: A is its normal matrix)
        predicted = everything @ head
        offered = c @ head
        weight = 1.0 + np.abs(offered - np.median(predicted)) / (predicted.std() + EPSILON)
    chosen: list[int] = []
    reasons: list[str] = []
    open_ = np.ones(len(offers), dtype=bool)
    while len(chosen) < limit and open_.any():
        score = sizes[offers] * weight
        if informed:
            score = score * ((c @ a_inv) * c).sum(axis=1)
        best = int(np.argmax(np.where(open_, score, -np.inf)))
        open_[best] = False
        chosen.append(int(typical[offers[best]]))
        if informed:
            v = a_inv @ c[best]
            a_inv = a_inv - np.outer(v, v) / (1.0 + c[best] @ v)
            reasons.append("typical of a large group the model is unsure about, unlike anything rated")
        else:
            reasons.append("typical of a large group of images unlike anything rated")
    taken = np.zeros(n, dtype=bool)
    taken[chosen] = True
    order = np.argsort(-sizes, kind="stable")
    while len(chosen) < limit:
        before = len(chosen)
        for j in order:
            if len(chosen) >= limit:
                break
            members = np.flatnonzero((labels[:n] == j) & ~taken)
            if len(members):
                best = int(members[int(np.argmin(away[members]))])
                chosen.append(best)
                reasons.append("typical of a large group of images")
                taken[best] = True
        if len(chosen) == before:
            break
    return chosen, reasons


def _design(candidates: np.ndarray, rated: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and rated rows in the ridge head's geometry: standardised
    per feature (over both), centred (the head's intercept is free), then
    projected to :data:`PROJECTED` dimensions (inner products kept to a few
    percent), float64."""
    both = np.concatenate([candidates, rated]).astype(np.float64) if len(rated) else candidates.astype(np.float64)
    both = (both - both.mean(axis=0)) / (both.std(axis=0) + 1e-6)
    both = _project(both.astype(np.float32), seed).astype(np.float64)
    return both[: len(candidates)], both[len(candidates) :]


def variance_reduction(
    candidates: np.ndarray,
    rated: np.ndarray,
    ratings: np.ndarray,
    limit: int,
    seed: int,
    top: int = 0,
) -> tuple[list[int], list[str]]:
    """Transductive experimental design (Yu, Bi and Tresp, "Active learning
    via transductive experimental design", ICML 2006) for the ridge head:
    greedily, the candidate whose rating would most reduce the ridge
    posterior's predictive variance summed over every candidate,
    ``x' A^-1 S A^-1 x / (1 + x' A^-1 x)`` with ``A`` the penalty plus the
    rated (and already chosen) rows' outer products and ``S`` the
    candidates' second moment: uncertain (little like anything rated) and
    representative (like many images) at once, and never twice the same
    direction (``A`` takes in every pick). Within one call no candidate
    near-identical to a pick (cosine similarity of the vectors at least
    :data:`NEAR`) is picked before every other candidate was near one. The ratings do not enter, but for
    ``top`` picks (first) of the candidates a ridge fit on the ratings
    predicts highest (the head of the user's ranking)."""
    c, r = _design(candidates, rated, seed)
    units = normalised(candidates)
    near = np.zeros(len(c), dtype=bool)  # near-identical to a pick of this call
    dims = c.shape[1]
    penalty = PENALTY * float((c**2).sum(axis=1).mean())
    a_inv = np.linalg.inv(penalty * np.eye(dims) + r.T @ r)
    second = c.T @ c / len(c)
    taken = np.zeros(len(c), dtype=bool)
    chosen: list[int] = []
    reasons: list[str] = []
    if top and len(r) >= MIN_RATINGS:
        y = np.asarray(ratings, dtype=np.float64)
        weights = r.T @ np.linalg.solve(r @ r.T + penalty * np.eye(len(r)), y - y.mean())
        for best in np.argsort(-(c @ weights))[: min(top, limit)]:
            chosen.append(int(best))
            reasons.append("among your model's highest predictions: rating it sharpens the top of your ranking")

    def take(best: int) -> np.ndarray:
        taken[best] = True
        near[units @ units[best] >= NEAR] = True
        v = a_inv @ c[best]
        return a_inv - np.outer(v, v) / (1.0 + c[best] @ v)

    for best in chosen:
        a_inv = take(best)
    while len(chosen) < limit:
        weighted = c @ a_inv
        gain = ((weighted @ second) * weighted).sum(axis=1) / (1.0 + (weighted * c).sum(axis=1))
        if (taken | near).all():  # every candidate is near a pick: a new round
            near[:] = False
        best = int(np.argmax(np.where(taken | near, -np.inf, gain)))
        chosen.append(best)
        reasons.append("what the model is least sure of, over many images like it")
        a_inv = take(best)
    return chosen, reasons


def choose(
    candidates: np.ndarray,
    rated: np.ndarray,
    ratings: np.ndarray,
    limit: int,
    strategy: str = SERVED,
    seed: int = 0,
    fit_rows: int | None = None,
) -> Choice:
    """Up to ``limit`` rows of ``candidates`` (N x D) to rate next, given the
    ``rated`` rows (M x D) and their ``ratings`` (M). ``strategy`` is one of
    :data:`STRATEGIES` (``ensemble-coverage`` falls back to ``coverage``
    under :data:`MIN_RATINGS` ratings). ``fit_rows``: the ensemble is
    fitted on the first this many rated rows only (a bound on its cost: an
    n x n solve per head), novelty still counts every rated row."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    limit = max(0, min(limit, len(candidates)))
    if limit == 0:
        return Choice([], [], strategy)
    if strategy == RANDOM:
        picked = np.random.default_rng(seed).choice(len(candidates), limit, replace=False)
        return Choice([int(i) for i in picked], ["random"] * limit, RANDOM)
    if strategy == SCHEDULE:
        strategy = TYPICAL if len(rated) < SWITCH_AT else VARIANCE
    if strategy == ALTERNATE:
        half = limit if len(rated) < SWITCH_AT else (limit + 1) // 2
        picked = typical_clusters(candidates, rated, half, seed)
        reasons = ["typical of a large group of images unlike anything rated"] * len(picked)
        extra, why = variance_reduction(candidates, rated, ratings, limit, seed, TOP_PICKS)
        for index, reason in zip(extra, why, strict=True):
            if len(picked) >= limit:
                break
            if index not in picked:
                picked.append(index)
                reasons.append(reason)
        return Choice(picked, reasons, ALTERNATE)
    if strategy == VARIANCE:
        picked, reasons = variance_reduction(candidates, rated, ratings, limit, seed, TOP_PICKS)
        return Choice(picked, reasons, VARIANCE)
    if strategy == INFORMATIVE:
        picked, reasons = typical_informative(candidates, rated, ratings, limit, seed)
        return Choice(picked, reasons, INFORMATIVE)
    if strategy == TYPICAL:
        picked = typical_clusters(candidates, rated, limit, seed)
        return Choice(picked, ["typical of a large group of images unlike anything rated"] * len(picked), TYPICAL)
    points = normalised(candidates)
    anchors = normalised(rated) if len(rated) else normalised(points.mean(axis=0, keepdims=True))
    novelty = _nearest_distance(points, anchors)
    if strategy == ENSEMBLE and len(rated) >= MIN_RATINGS:
        rows = len(rated) if fit_rows is None else max(MIN_RATINGS, fit_rows)
        spread = disagreement(candidates, rated[:rows], ratings[:rows], seed)
        reason = "the model is unsure here, unlike anything rated"
    else:
        strategy = COVERAGE
        spread = np.ones(len(points))
        reason = "unlike anything rated" if len(rated) else "a spread over the library"
    chosen: list[int] = []
    taken = np.zeros(len(points), dtype=bool)
    for _ in range(limit):
        score = np.where(taken, -np.inf, spread * novelty)
        best = int(np.argmax(score))
        chosen.append(best)
        taken[best] = True
        novelty = np.minimum(novelty, np.clip(1.0 - points @ points[best], 0.0, 2.0))
    return Choice(chosen, [reason] * len(chosen), strategy)
