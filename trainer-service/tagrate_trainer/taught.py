"""Learning a tag from a handful of examples: a weighted ridge classifier on
the images' cached feature vectors (the same vectors a taste is learned
from), with its threshold chosen by cross-validation for precision.

Examples: positives (images with the tag by hand), explicit negatives
(images the tag was removed from) and a sample of the other images, taken
as negatives. The other images are a sample of a much larger population
(every image without either label).
Some of the other images do carry the tag unlabelled: the precision
estimate takes them into account (see :func:`_threshold`).

The classifier, in the kernel (dual) form since examples are few and
vectors long: with ``X`` the L2-normalised vectors plus a constant column,
``y`` 1 for positives and 0 for negatives and ``c`` each example's weight
(positives and negatives weigh the same in all), the weights are
``Xᵀ (X Xᵀ + λ C⁻¹)⁻¹ y``. Pure numpy; a few hundred examples cost a few
milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ridge penalty (on L2-normalised vectors, whose Gram entries are cosines).
PENALTY = 3.0
FOLDS = 5
# The positive-score quantiles the unlabelled share is estimated at.
PI_QUANTILES = (0.5, 0.75, 0.9)


@dataclass(frozen=True)
class TaughtModel:
    weights: np.ndarray  # (d,) float32
    bias: float
    threshold: float  # apply the tag at or above this score
    precision_cv: float  # the estimated precision at the threshold
    examples: int
    negatives: int  # explicit negatives

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return _normalised(vectors) @ self.weights + self.bias


def _normalised(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _fit(x: np.ndarray, y: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted ridge on normalised ``x``: (weights, bias)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    gram = xb @ xb.T
    alpha = np.linalg.solve(gram + PENALTY * np.diag(1.0 / c), y)
    w = xb.T @ alpha
    return w[:-1], float(w[-1])


def _weights(y: np.ndarray, explicit: np.ndarray) -> np.ndarray:
    """Positives and negatives weigh the same in all; an explicit negative
    (a person said no) counts three sampled ones."""
    c = np.ones(len(y))
    negatives = y == 0
    c[negatives & explicit] = 3.0
    c[y == 1] = c[negatives].sum() / max(1, int((y == 1).sum()))
    return c


def _threshold(
    scores: np.ndarray, y: np.ndarray, other: np.ndarray, explicit: np.ndarray, population: int, target: float
) -> tuple[float, float]:
    """The lowest out-of-fold positive score at which the estimated
    precision of applying the tag reaches ``target``, with that precision;
    when none does, the score of the best estimate (ties: the lower score).

    The sampled other images are unlabelled, not negative: some carry the
    tag. Their share ``pi`` is estimated from how many of them score at or
    above a quantile of the positives' scores (a share ``1 - q`` of the
    positives does, so about that share of the unlabelled positives does
    too): ``pi = F(quantile q) / (1 - q)``; negatives scoring that high
    inflate the estimate, so the least over ``PI_QUANTILES`` is taken. At threshold
    ``t`` the images passing are ``F(t) * N`` (``F``: the share of others
    scoring at or above ``t``, ``N`` the population), of which about
    ``pi * R(t) * N`` carry the tag (``R``: the share of positives passing);
    each explicit negative passing stands for ``N / sample`` images that do
    not. Precision = ``pi R / (F + E / sample)``, at most 1."""
    positives, others, negatives = scores[y == 1], scores[other], scores[explicit]
    if not len(positives):
        return float("inf"), 0.0
    candidates = np.unique(positives)
    # A share of others at or above the positives' q-quantile estimates
    # (1 - q) * pi, but negatives that score like positives inflate it, the
    # more the lower q is: the least of several quantiles' estimates.
    pi = (
        min(
            1.0,
            *(float(np.mean(others >= np.quantile(positives, q))) / (1.0 - q) for q in PI_QUANTILES),
        )
        if len(others)
        else 1.0
    )
    sample = max(1, len(others))
    best_t, best_p = float("inf"), -1.0
    for t in candidates:  # ascending
        recall = float(np.mean(positives >= t))
        passing = (float(np.sum(others >= t)) + float(np.sum(negatives >= t))) / sample
        precision = 1.0 if passing <= 0 else min(1.0, pi * recall / passing)
        if precision >= target:
            return float(t), precision
        if precision > best_p:
            best_t, best_p = float(t), precision
    return best_t, max(0.0, best_p)


def learn(
    positives: np.ndarray,
    explicit_negatives: np.ndarray,
    others: np.ndarray,
    population: int,
    target_precision: float = 0.9,
    seed: int = 0,
) -> TaughtModel:
    """A tag's classifier from its examples. ``others``: a sample of the
    images with neither label; ``population``: how many such images there
    are (each sampled one stands for ``population / len(others)``)."""
    x = _normalised(np.vstack([positives, explicit_negatives, others]))
    n_pos, n_exp = len(positives), len(explicit_negatives)
    y = np.zeros(len(x))
    y[:n_pos] = 1.0
    explicit = np.zeros(len(x), dtype=bool)
    explicit[n_pos : n_pos + n_exp] = True
    other = np.zeros(len(x), dtype=bool)
    other[n_pos + n_exp :] = True
    # Out-of-fold scores: every example scored by a model that never saw it.
    rng = np.random.default_rng(seed)
    folds = np.empty(len(x), dtype=int)
    for label in (0.0, 1.0):
        members = np.flatnonzero(y == label)
        folds[members] = rng.permutation(len(members)) % FOLDS
    oof = np.empty(len(x))
    for fold in range(FOLDS):
        held = folds == fold
        if not held.any():
            continue
        train = ~held
        w, b = _fit(x[train], y[train], _weights(y[train], explicit[train]))
        oof[held] = x[held] @ w + b
    threshold, precision = _threshold(oof, y, other, explicit, population, target_precision)
    w, b = _fit(x, y, _weights(y, explicit))
    return TaughtModel(w.astype(np.float32), b, threshold, precision, n_pos, n_exp)
