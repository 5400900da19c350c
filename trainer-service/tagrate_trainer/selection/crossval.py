"""Cross-validation of the candidates (step 2 of :mod:`tagrate_trainer.selection`'s
docstring): stratified folds, the out-of-fold predictions and figures,
their bootstrap noise, and the figures a job reports.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from tagrate_common.vision.rating_heads import RatingHead

from ..combined import mean_of
from ..mlp import EarlyStopped, early_stopped_mlp
from ..training import Reporter, Standardiser, TrainedHead, TrainingConfig, average_ranks, mean_absolute_error, spearman
from .candidates import (
    BLEND,
    BLENDED,
    GLOBAL,
    MEAN,
    RIDGE,
    SLOW,
    Prior,
    candidates,
)
from .rule import Spread, guard_threshold, pick

# From this many ratings on, FOLDS_FOR_MANY folds (when cv_folds is more).
MANY_RATINGS, FOLDS_FOR_MANY = 500, 3
# From REPEAT_RATINGS up to MANY_RATINGS, the k-fold CV is repeated
# CV_REPEATS times with differently seeded folds and the figures averaged:
# there the candidates are close, and one split's noise picked the worse
# one about as often as the better (bench/learning.py).
REPEAT_RATINGS, CV_REPEATS = 100, 3
LEVELS = 6  # rating levels 0, 1/6, ..., 1
# The standard errors come from this many bootstrap resamples of the rated
# images, the same resamples for every candidate, so a difference is paired.
BOOTSTRAP_DRAWS = 200
# Resamples weighed at once (their weights are draws x ratings floats).
BOOTSTRAP_BLOCK = 25


@dataclass(frozen=True)
class OutOfFold:
    """One k-fold split's out-of-fold predictions: ``predictions[name][i]``
    is candidate ``name``'s prediction for rating ``i`` by the fit on the
    other folds; ``fold_means[i]`` the mean rating of those folds."""

    fold: np.ndarray
    fold_means: np.ndarray
    predictions: dict[str, np.ndarray]


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    spearman: dict[str, float]  # per candidate, and MEAN
    mae: dict[str, float]
    selected: str  # a candidate, or NONE
    threshold: float  # the CV Spearman a candidate had to beat
    repeats: int = 1  # of the k-fold split, figures averaged
    # Every split's out-of-fold predictions (the SLOW candidates in the first only).
    rounds: tuple[OutOfFold, ...] = field(default=(), compare=False, repr=False)
    spread: Spread | None = field(default=None, compare=False, repr=False)
    # The global taste's CV Spearman on these ratings (None without one).
    agreement: float | None = None


# ---- folds -------------------------------------------------------------------


def _position(salt: str, image: str) -> float:
    return int.from_bytes(hashlib.sha256(f"{salt}:{image}".encode()).digest()[:8], "big") / 2.0**64


def stratified_folds(images: Sequence[str], ratings: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of each example: whole images per fold, each
    rating level (of the image's mean rating) dealt round the folds in a
    seeded order, so every fold gets about its share of every level."""
    totals: dict[str, list[float]] = {}
    for image, rating in zip(images, ratings, strict=True):
        totals.setdefault(image, []).append(float(rating))
    level = {image: round(float(np.mean(values)) * LEVELS) for image, values in totals.items()}
    order = sorted(totals, key=lambda image: (level[image], _position(f"fold:{seed}", image)))
    # Dealing on from where the last level stopped keeps fold sizes within one.
    fold_of = {image: i % folds for i, image in enumerate(order)}
    return np.fromiter((fold_of[image] for image in images), dtype=np.int64, count=len(images))


# ---- cross-validation -------------------------------------------------------


def _weighted_correlations(weights: np.ndarray, columns: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pearson's correlation of each of ``columns`` (n, m) with ``target``
    (n,) under each row of ``weights`` (draws, n): (draws, m)."""
    # A resample of a few images can draw none of them (all weights 0).
    total = np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    mean_t, mean_tt = weights @ target[:, None] / total, weights @ (target * target)[:, None] / total
    mean_c, mean_cc = weights @ columns / total, weights @ (columns * columns) / total
    covariance = weights @ (columns * target[:, None]) / total - mean_c * mean_t
    variance = (mean_cc - mean_c**2) * (mean_tt - mean_t**2)
    positive = variance > 1e-12
    return np.where(positive, covariance / np.sqrt(np.where(positive, variance, 1.0)), 0.0)


def bootstrap_spread(rounds: Sequence[OutOfFold], y: np.ndarray, images: Sequence[str], seed: int) -> Spread:
    """Every choice's CV Spearman (averaged over the rounds it was in) on
    ``BOOTSTRAP_DRAWS`` resamples of the images, whole images at a time
    (the Poisson bootstrap: each image weighted by a Poisson(1) count).
    The ranks are those of the whole sample, weighted by how often each
    rating was drawn (re-ranking every resample would change little and
    cost a sort per resample)."""
    index: dict[str, int] = {}
    group = np.fromiter((index.setdefault(image, len(index)) for image in images), dtype=np.int64, count=len(images))
    rng = np.random.default_rng(seed)
    ranked_y = average_ranks(y)
    ranked = []
    for r in rounds:
        names = [name for name in r.predictions if name != MEAN]
        ranked.append((names, np.stack([average_ranks(r.predictions[name] - r.fold_means) for name in names], 1)))
    blocks: dict[str, list[np.ndarray]] = {}
    for start in range(0, BOOTSTRAP_DRAWS, BOOTSTRAP_BLOCK):
        size = min(BOOTSTRAP_BLOCK, BOOTSTRAP_DRAWS - start)
        # Poisson(1) counts per image: the multinomial's counts for many
        # images, drawn in one vectorised call.
        weights = rng.poisson(1.0, size=(size, len(index))).astype(np.float64)[:, group]
        figures: dict[str, list[np.ndarray]] = {}
        for names, columns in ranked:
            correlations = _weighted_correlations(weights, columns, ranked_y)
            for i, name in enumerate(names):
                figures.setdefault(name, []).append(correlations[:, i])
        for name, values in figures.items():
            blocks.setdefault(name, []).append(np.mean(values, axis=0))
    return Spread({name: np.concatenate(values) for name, values in blocks.items()})


def cv_plan(y: np.ndarray, images: Sequence[str], config: TrainingConfig) -> tuple[int, int]:
    """(folds, repeats) for these ratings."""
    distinct = len(set(images))
    # Fewer folds for many ratings: each fold's fits cost more, and the
    # figures need less averaging.
    folds = min(config.cv_folds if len(y) < MANY_RATINGS else min(config.cv_folds, FOLDS_FOR_MANY), distinct)
    repeats = CV_REPEATS if REPEAT_RATINGS <= len(y) < MANY_RATINGS else 1
    return folds, repeats


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    images: Sequence[str],
    config: TrainingConfig,
    reporter: Reporter,
    prior: Prior | None = None,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    base: RatingHead | None = None,
) -> CrossValidation:
    """Every candidate's pooled out-of-fold figures (averaged over the
    repeats), and the selection. ``reference``: the global head's
    predictions for raw feature vectors, scored as the ``global`` choice
    (fitted on nothing here). ``base``: the global head, for the
    ``residual`` and ``blend`` candidates."""
    folds, repeats = cv_plan(y, images, config)
    fits = candidates(len(y), prior, base)
    # The global taste as this user's ratings see it: the global head, or
    # its linear copy when only that is given.
    taste = base.predict(x) if base is not None else (x.astype(np.float64) @ prior.slope if prior is not None else None)
    agreements: list[float] = []
    names = (*fits, MEAN) if reference is None else (*fits, MEAN, GLOBAL)
    # The MLP runs dominate the time: those candidates are cross-validated
    # on the first split only, the closed-form ones on every repeat.
    rounds = [fits] + [{n: f for n, f in fits.items() if n not in SLOW} for _ in range(repeats - 1)]
    totals: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    out_of_fold: list[OutOfFold] = []
    steps, step = folds * sum(len(round_fits) for round_fits in rounds), 0
    global_predictions = np.asarray(reference(x), dtype=np.float64) if reference is not None else None
    for r, round_fits in enumerate(rounds):
        fold = stratified_folds(images, y, folds, config.seed + r)
        predictions = {name: np.empty(len(y)) for name in (*round_fits, MEAN)}
        if global_predictions is not None:
            predictions[GLOBAL] = global_predictions
        fold_means = np.empty(len(y))
        for f in range(folds):
            inside = fold != f
            images_in = [image for image, keep in zip(images, inside, strict=True) if keep]
            predictions[MEAN][~inside] = fold_means[~inside] = y[inside].mean()
            x_in, y_in = x[inside], y[inside]
            early: EarlyStopped | None = None  # one MLP run serves both candidates that need it
            heads: dict[str, TrainedHead] = {}
            for name, fit in round_fits.items():
                reporter.check()
                with reporter.span(step / steps, (step + 1) / steps):
                    if name == BLEND:  # its members are fitted already, on the same ratings
                        head = mean_of([heads[member] for member in BLENDED], Standardiser.fit(x_in))
                    else:
                        if name in SLOW:
                            early = early or early_stopped_mlp(x_in, y_in, images_in, config, reporter)
                            fit = partial(fit, early=early)
                        head, _ = fit(x_in, y_in, images_in, config, reporter)
                    heads[name] = head
                    predictions[name][~inside] = head.predict(x[~inside])
                step += 1
        # Ranked as departures from each fold's mean: a head predicts around the
        # mean of the ratings it was fitted on, and a fold whose ratings run low
        # has the others' higher mean; pooled raw predictions would rank those
        # means against the folds' ratings and penalise every weak head for it.
        for name, p in predictions.items():
            totals[name].append((spearman(p - fold_means, y), mean_absolute_error(p, y)))
        if taste is not None:
            agreements.append(spearman(taste - fold_means, y))
        out_of_fold.append(OutOfFold(fold, fold_means, predictions))
    spearmans = {name: float(np.mean([s for s, _ in figures])) for name, figures in totals.items()}
    maes = {name: float(np.mean([m for _, m in figures])) for name, figures in totals.items()}
    spread = bootstrap_spread(out_of_fold, y, images, config.seed)
    agreement = float(np.mean(agreements)) if agreements else None
    return CrossValidation(
        folds,
        spearmans,
        maes,
        pick(spearmans, maes, len(y), spread, agreement),
        guard_threshold(len(y)),
        repeats,
        tuple(out_of_fold),
        spread,
        agreement,
    )


def cv_metrics(cv: CrossValidation) -> dict[str, float]:
    """The figures a job reports: ``cv_<name>_spearman`` / ``_mae`` per
    candidate and for ``mean``, ``cv_<name>_se`` (the standard error of its
    CV Spearman minus ridge's) for every choice but ridge, ``cv_agreement``
    (the global taste's CV Spearman, when there is one), ``cv_folds``,
    ``cv_threshold``, and ``selected_<name>`` = 1 for the selected one
    (``selected_none`` when none beat the mean)."""
    metrics = {
        "cv_folds": float(cv.folds),
        "cv_repeats": float(cv.repeats),
        "cv_threshold": cv.threshold,
        f"selected_{cv.selected}": 1.0,
    }
    for name in cv.spearman:
        metrics[f"cv_{name}_spearman"] = cv.spearman[name]
        metrics[f"cv_{name}_mae"] = cv.mae[name]
        if cv.spread is not None and name not in (RIDGE, MEAN):
            metrics[f"cv_{name}_se"] = cv.spread.se(name, RIDGE)
    if cv.agreement is not None:
        metrics["cv_agreement"] = cv.agreement
    return metrics
