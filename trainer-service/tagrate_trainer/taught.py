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

# Ridge penalty (on L2-normalised vectors, whose Gram entries are cosines):
# strong, since a few examples in 1280 dimensions are easily overfitted
# (on Twemoji, 30 ranks held-out images better than 3 at 5-20 examples).
PENALTY = 30.0
FOLDS = 5
# The positive-score quantiles the unlabelled share is estimated at.
PI_QUANTILES = (0.5, 0.75, 0.9)
# The refusal rule (see :func:`_separated`): the out-of-fold positives must
# outrank this share of the other images below their top ``UNLABELLED_TOP``
# (which may carry the tag unlabelled) before the tag is applied at all.
SEPARATION = 0.97
UNLABELLED_TOP = 0.25
# At most this share of the estimated unlabelled positives is tagged: the
# precision estimate is optimistic where scores overlap, and in practice this
# floor, not the estimate, sets the threshold. A quarter (was a half) raised
# the applied tags' precision on Twemoji (tuned on seeds 1 and 2) from
# 0.69/0.79/0.78 to 0.93/0.88/0.85 at 5/10/20 examples, tagging 54/141/193
# images per draw instead of 342/340/318 (bench/learning/taught.py).
APPLIED_SHARE = 0.25


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


def _fit(gram: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Weighted ridge in kernel form on the Gram matrix (normalised vectors
    plus a constant column) of its examples: the dual coefficients."""
    return np.linalg.solve(gram + PENALTY * np.diag(1.0 / c), y)


def _weights(y: np.ndarray, explicit: np.ndarray) -> np.ndarray:
    """Positives and negatives weigh the same in all; an explicit negative
    (a person said no) counts three sampled ones."""
    c = np.ones(len(y))
    negatives = y == 0
    c[negatives & explicit] = 3.0
    c[y == 1] = c[negatives].sum() / max(1, int((y == 1).sum()))
    return c


def _separated(positives: np.ndarray, others: np.ndarray) -> bool:
    """Whether the out-of-fold positives outrank ``SEPARATION`` of the other
    examples, leaving out the top ``UNLABELLED_TOP`` of them (where images
    carrying the tag unlabelled would be). When they do not, the ranking is
    too poor for any threshold's precision estimate to be trusted (on
    Twemoji, applying tags anyway gave 0.2-0.4 precision): nothing is
    applied rather than noisy tags."""
    if not len(others):
        return True
    low = np.sort(others)[: max(1, round(len(others) * (1.0 - UNLABELLED_TOP)))]
    return float(np.mean(positives[:, None] > low[None, :])) >= SEPARATION


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
    not. Precision = ``pi R / (F + E / sample)``, at most 1. The threshold
    is never below the score that tags ``APPLIED_SHARE`` of the estimated
    unlabelled positives, and is infinite (the tag is applied nowhere) when
    the examples are not separated (:func:`_separated`)."""
    positives, others, negatives = scores[y == 1], scores[other], scores[explicit]
    if not len(positives) or not _separated(positives, np.concatenate([others, negatives])):
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
    # Tag at most a share of the images the estimate says carry the tag: the
    # estimate is optimistic where scores do not separate well.
    floor = float(np.quantile(others, 1.0 - APPLIED_SHARE * pi)) if len(others) else -np.inf
    best_t, best_p = float("inf"), -1.0
    for t in candidates[candidates >= floor]:  # ascending
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
    # Out-of-fold scores: every example scored by a model that never saw it
    # (one Gram matrix, its blocks per fold: no vector product is repeated).
    rng = np.random.default_rng(seed)
    folds = np.empty(len(x), dtype=int)
    for label in (0.0, 1.0):
        members = np.flatnonzero(y == label)
        folds[members] = rng.permutation(len(members)) % FOLDS
    xb = np.hstack([x, np.ones((len(x), 1))])
    gram = xb @ xb.T
    oof = np.empty(len(x))
    for fold in range(FOLDS):
        held = folds == fold
        if not held.any():
            continue
        train = ~held
        alpha = _fit(gram[np.ix_(train, train)], y[train], _weights(y[train], explicit[train]))
        oof[held] = gram[np.ix_(held, train)] @ alpha
    threshold, precision = _threshold(oof, y, other, explicit, population, target_precision)
    w = xb.T @ _fit(gram, y, _weights(y, explicit))
    return TaughtModel(w[:-1].astype(np.float32), float(w[-1]), threshold, precision, n_pos, n_exp)
