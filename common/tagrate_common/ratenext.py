"""Which images a user should rate next to teach their model the most: the
choice behind /getratenext, shared by the dataset service (which serves it)
and ``bench learning`` (which measured it against random picks).

Inputs are feature vectors (the rater's extractor's, as cached for
training): those of candidate images the user has not rated, and those of
the images they rated with their ratings. Everything is numpy on at most a
few thousand rows, so one call takes milliseconds to tens of them.

The strategy, ``ensemble-coverage`` (see docs/taste-loop.md for the
measurements that chose it over the alternatives kept here):

* informative: a bootstrap ensemble of ridge heads is fitted on the user's
  ratings (resampled with replacement); a candidate's *disagreement* is the
  standard deviation of the ensemble's predictions for it: where the heads
  disagree, a rating changes the model most;
* diverse: a candidate's *novelty* is its cosine distance to the nearest
  image already rated or already chosen in this call (so twenty
  near-identical images are never all chosen);
* the next pick is the candidate with the largest disagreement x novelty,
  greedily, updating the novelty after each pick.

Without enough ratings for an ensemble (fewer than :data:`MIN_RATINGS`), it
is a *cold-start spread* (``coverage``): farthest-first traversal from the
rated images (or, with none, from the candidates' mean), i.e. novelty alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENSEMBLE = "ensemble-coverage"
COVERAGE = "coverage"
RANDOM = "random"
STRATEGIES = (ENSEMBLE, COVERAGE, RANDOM)

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


def choose(
    candidates: np.ndarray,
    rated: np.ndarray,
    ratings: np.ndarray,
    limit: int,
    strategy: str = ENSEMBLE,
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
