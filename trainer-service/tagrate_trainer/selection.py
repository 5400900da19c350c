"""Choosing a user's head by cross-validation, and the whole training
procedure (:func:`train_head`).

1. **Held-out split** (as :func:`~.training.held_out_mask` says): the
   held-out ratings are seen by nothing below; they give the reported
   ``spearman`` / ``mae`` (and ``mean_*``, ``reference_*``) figures.
2. **Cross-validation** on the rest: ``k`` folds (``cv_folds``, fewer when
   there are fewer images), stratified by rating level (the seven levels
   0, 1/6, ..., 1 of the original, from each image's mean rating) and
   seeded, whole images per fold. Every candidate is fitted on ``k - 1``
   folds and predicts the last, exactly as the rater would serve it; the
   pooled out-of-fold predictions give its ``cv_<name>_spearman`` and
   ``cv_<name>_mae``. From ``REPEAT_RATINGS`` to ``MANY_RATINGS`` ratings
   the whole k-fold split is repeated ``CV_REPEATS`` times with other
   seeds and the figures averaged (``cv_repeats``), for every candidate
   but the two that train an MLP (``SLOW``: their runs are most of the
   time; they are cross-validated on the first split). The candidates,
   simplest first:

   * ``ridge``: ridge regression on the standardised features, penalty by
     GCV (:mod:`.ridge`), through the sigmoid link (a linear head);
   * ``prior``: only when a global prior is given (:func:`global_prior`: the
     global head when it is linear, else a ridge head fitted on the same
     ratings next to it): ridge shrunk toward the global taste's direction.
     The prior's weights, moved
     onto this user's standardised features and scaled by a least-squares
     factor ``beta``, are the prior mean ``w_g``; ridge with its own GCV
     penalty fits ``y - X w_g`` and ``w_g`` is added back, so the head is
     still one linear head. With few ratings the penalty keeps it near the
     global taste; with many the user's own ratings take over;
   * ``residual``: only when the global head is given (``base``; then
     ``prior`` is left out, see :func:`candidates`): the
     global head's own logit (an MLP's too), scaled by ``beta`` (least
     squares on this user's ratings, shrunk toward 1 by
    ``RESIDUAL_PSEUDO`` ratings when the global logit correlates positively
    with them, not shrunk when it does not), plus ridge with its own penalty on what
    it leaves. One head: :mod:`.combined` writes the sum of the global
     head's logit and a linear logit as one linear or MLP head;
   * ``blend``: the mean of the ``ridge`` and ``residual`` heads' logits
     (again one head, :func:`.combined.mean_of`); in cross-validation the
     members' fold fits are reused;
   * ``current``: what the trainer fitted before (:func:`~.training.fit_current`);
   * ``mlp``: the MLP alone, from ``MLP_MIN_RATINGS`` ratings on.

   ``mean`` (predicting the training folds' mean) is the baseline: its
   Spearman correlation is 0 (it departs from the mean nowhere). ``global``
   is the global head as it serves now, when the caller has it: fitted on
   nothing here, it predicts every fold as it is (it was trained on
   everyone's ratings, this user's too, which flatters it a little; for a
   user with few ratings that share is small, and a user with many
   ratings has personal heads that win anyway).
3. **Selection and the guard.** The CV figures are noisy (at 20 ratings a
   candidate's CV Spearman has a standard error near 0.2), so a candidate
   must beat the plain ``ridge`` head by more than its noise to replace
   it. The noise is measured by resampling the rated images
   (``BOOTSTRAP_DRAWS`` bootstrap resamples, the same for every candidate,
   :func:`bootstrap_spread`): the standard error of each candidate's CV
   Spearman minus ridge's (``cv_<name>_se``).

   * The candidates built on the global taste (``prior``, ``residual``,
     ``blend``) are tried only when that taste ranks this user's ratings
     better or worse than chance would: its CV Spearman (``cv_agreement``,
     the global head's or, without one, its linear prior's) beyond
     ``GUARD_Z / sqrt(n - 1)`` either way.
   * ``ridge`` is kept unless another candidate's CV Spearman exceeds
     ridge's by more than ``Z_SELECT`` standard errors of the difference
     (and ``TIE``); among those that do (preferring those that beat the
     mean, below), the highest wins, a near tie (within ``TIE``) going to
     the simpler and the blend winning when within ``BLEND_TIE`` of the
     best.
   * The guard: a head beats the mean with a CV Spearman above
     ``GUARD_Z / sqrt(n - 1)`` (a one-sided 5% test: 1.645 standard errors
     of a Spearman correlation of unrelated rankings, so ratings that
     carry no taste pass only by a rare chance) and a CV MAE below the
     mean's.
   * With a global head that beats the mean on these ratings, it is kept
     (``selected_global``) when the chosen head does not beat the mean, or
     when the global head's CV Spearman is higher by ``GLOBAL_MARGIN`` and
     by ``Z_SELECT`` standard errors. With a global head that does not beat
     the mean here (the user's taste is unlike the global one), the chosen
     head is published even when the guard cannot yet tell it from noise:
     fitted to this user's ratings, it is expected to rank them no worse
     than a head that does not know them. Without a global head, a chosen
     head that fails the guard gives ``selected_none``.

   With ``selected_none`` or ``selected_global`` the result has no head
   and nothing is published: whatever serves the user now (the global
   head, or a personal head from an earlier job) keeps serving.
4. **Refits.** The winner is refitted on the cross-validated ratings and
   judged on the held-out ones, then refitted on every rating: that head is
   the one published. So the held-out figures describe the procedure on
   slightly fewer ratings than the published head saw, never a head that
   saw them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from tagrate_common.vision.rating_heads import MAX_HIDDEN, RatingHead

from .combined import LogitSum, mean_of
from .ridge import GCV_ALPHAS, Ridge
from .training import (
    LINEAR,
    MIN_EXAMPLES,
    EarlyStopped,
    NotEnoughData,
    ProgressReport,
    Reporter,
    Standardiser,
    TrainedHead,
    TrainingConfig,
    TrainingData,
    TrainingResult,
    _ridge_head,
    _ridge_link,
    average_ranks,
    early_stopped_mlp,
    fit_current,
    fit_mlp,
    held_out_mask,
    mean_absolute_error,
    spearman,
)

RIDGE, PRIOR, RESIDUAL, BLEND = "ridge", "prior", "residual", "blend"
CURRENT, MLP_CANDIDATE = "current", "mlp"
GLOBAL, MEAN, NONE = "global", "mean", "none"
# The heads a job can fit and publish, simplest first.
CANDIDATES = (RIDGE, PRIOR, RESIDUAL, BLEND, CURRENT, MLP_CANDIDATE)
# The candidates that train an MLP (cross-validated on one split only).
SLOW = (CURRENT, MLP_CANDIDATE)
# The heads whose logits the blend averages.
BLENDED = (RIDGE, RESIDUAL)
# The residual candidate's scale of the global logit is shrunk toward 1 as
# if this many more ratings agreed with the global head exactly
# (bench/learning.py: at 10 ratings, Spearman +0.19 over ridge instead of
# +0.10 with the least-squares scale alone; no change from 20 ratings on),
# but only when the global logit correlates positively with the user's
# ratings: shrunk toward 1 for users whose taste opposes the global one,
# the residual head was 0.23 below ridge at 10 ratings (now 0.10 above).
RESIDUAL_PSEUDO = 20.0
# What selection chooses among.
CHOICES = (*CANDIDATES, GLOBAL)
# The global head is kept over the best personal candidate only when its CV
# Spearman is this much higher: the personal heads' CV figures come from
# fits on (k-1)/k of the ratings, the published one sees them all, so the
# comparison is tilted toward the fixed global head (bench/learning.py:
# without a margin it was kept at 100 ratings where ridge did better).
GLOBAL_MARGIN = 0.03
# The MLP needs this many ratings before it is worth cross-validating.
MLP_MIN_RATINGS = 200
# CV Spearman correlations this close count as a tie.
TIE = 0.005
# The blend is chosen when its CV Spearman is this close to the best: an
# average of two heads varies less from one set of ratings to the next than
# either, and picking the single best among close candidates mostly picks
# the split's noise (bench/learning.py: the blend's held-out Spearman was
# 0.01-0.03 above what selection by CV alone reached at 50-200 ratings).
BLEND_TIE = 0.02
# A candidate beats the mean only with a CV Spearman above GUARD_Z / sqrt(n - 1).
GUARD_Z = 1.645
# From this many ratings on, FOLDS_FOR_MANY folds (when cv_folds is more).
MANY_RATINGS, FOLDS_FOR_MANY = 500, 3
# From REPEAT_RATINGS up to MANY_RATINGS, the k-fold CV is repeated
# CV_REPEATS times with differently seeded folds and the figures averaged:
# there the candidates are close, and one split's noise picked the worse
# one about as often as the better (bench/learning.py).
REPEAT_RATINGS, CV_REPEATS = 100, 3
LEVELS = 6  # rating levels 0, 1/6, ..., 1
# Another candidate replaces ridge only when its CV Spearman is higher by
# more than Z_SELECT standard errors of the difference (the one-standard-
# error rule): at 20-100 ratings one split's noise in the CV figures is
# as large as the candidates' real differences, and picking the highest
# figure picked a worse head than ridge for users unlike the bench's
# (bench/learning.py). The global head is kept over the chosen head only
# when it is better by that much too (and by GLOBAL_MARGIN).
Z_SELECT = 1.0
# The standard errors come from this many bootstrap resamples of the rated
# images, the same resamples for every candidate, so a difference is paired.
BOOTSTRAP_DRAWS = 200
# Resamples weighed at once (their weights are draws x ratings floats).
BOOTSTRAP_BLOCK = 25
# The candidates built on the global taste: they are tried only when the
# global taste ranks this user's ratings better (or, for a negative scale,
# worse) than chance would, by the guard's test.
GLOBAL_BASED = (PRIOR, RESIDUAL, BLEND)


@dataclass(frozen=True)
class Prior:
    """The global head's linear weights on raw feature vectors (its
    normalisation folded in): ``logit = slope . x + offset``."""

    slope: np.ndarray

    @classmethod
    def of(cls, head: RatingHead) -> Prior | None:
        """The prior a head gives, or None when it is not linear."""
        return cls(head.folded["weight"].astype(np.float64)) if head.kind == LINEAR else None


def global_prior(data: TrainingData, result: TrainingResult, config: TrainingConfig) -> TrainedHead | None:
    """The linear head that stands for the global taste as a prior, after
    the global head was trained on ``data`` with ``result``: the global head
    itself when it is linear, else the ``ridge`` candidate refitted on the
    same ratings (an MLP's weights are no linear direction to shrink toward).
    None when no global head came out."""
    if result.head is None:
        return None
    if result.head.kind == LINEAR:
        return result.head
    head, _ = fit_candidate(RIDGE, data, config)
    return head


@dataclass(frozen=True)
class OutOfFold:
    """One k-fold split's out-of-fold predictions: ``predictions[name][i]``
    is candidate ``name``'s prediction for rating ``i`` by the fit on the
    other folds; ``fold_means[i]`` the mean rating of those folds."""

    fold: np.ndarray
    fold_means: np.ndarray
    predictions: dict[str, np.ndarray]


@dataclass(frozen=True)
class Spread:
    """Each choice's CV Spearman on bootstrap resamples of the rated images
    (the same resamples for every choice): the noise in the CV figures."""

    draws: dict[str, np.ndarray]

    def se(self, a: str, b: str) -> float:
        """The standard error of ``a``'s CV Spearman minus ``b``'s."""
        if a not in self.draws or b not in self.draws:
            return 0.0
        return float(np.std(self.draws[a] - self.draws[b]))


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


# ---- candidates --------------------------------------------------------------

Fit = Callable[..., tuple[TrainedHead, dict[str, float]]]  # (x, y, images, config, reporter)


def fit_ridge(
    x: np.ndarray, y: np.ndarray, images: Sequence[str], config: TrainingConfig, reporter: Reporter
) -> tuple[TrainedHead, dict[str, float]]:
    """Ridge on standardised features, penalty by GCV."""
    scaling = Standardiser.fit(x)
    solver = Ridge(scaling.apply(x), y)
    alpha = solver.best_alpha(GCV_ALPHAS)
    reporter.phase("ridge", 1.0)
    return _ridge_head(solver.weights(alpha), solver.y_mean, scaling), {"ridge_alpha": alpha}


def prior_fit(prior: Prior) -> Fit:
    """Ridge shrunk toward ``prior`` (see the module docstring)."""

    def fit(
        x: np.ndarray, y: np.ndarray, images: Sequence[str], config: TrainingConfig, reporter: Reporter
    ) -> tuple[TrainedHead, dict[str, float]]:
        scaling = Standardiser.fit(x)
        z = scaling.apply(x).astype(np.float64)
        a, _ = _ridge_link(float(y.mean()))
        # The global logit's slope on this user's z, in rating units (the
        # ridge head's logit is a * (w . z) + c).
        direction = prior.slope * scaling.std / a
        guess = z @ direction  # centred, since z is
        power = float(guess @ guess)
        beta = float(guess @ (y - y.mean())) / power if power > 0 else 0.0
        solver = Ridge(z, y - beta * guess)
        alpha = solver.best_alpha(GCV_ALPHAS)
        reporter.phase("prior", 1.0)
        head = _ridge_head(solver.weights(alpha) + beta * direction, solver.y_mean, scaling)
        return head, {"prior_alpha": alpha, "prior_beta": beta}

    return fit


def residual_fit(base: RatingHead) -> Fit:
    """The global head, rescaled, plus ridge on what it leaves (see the
    module docstring)."""
    logit = LogitSum.of(base)

    def fit(
        x: np.ndarray, y: np.ndarray, images: Sequence[str], config: TrainingConfig, reporter: Reporter
    ) -> tuple[TrainedHead, dict[str, float]]:
        scaling = Standardiser.fit(x)
        z = scaling.apply(x).astype(np.float64)
        a, _ = _ridge_link(float(y.mean()))
        # The global logit in rating units around this user's mean (the
        # ridge head's logit is a * (w . z) + c).
        guess = logit(x) / a
        offset = float(guess.mean())
        guess -= offset
        power = float(guess @ guess)
        agreement = float(guess @ (y - y.mean()))
        # Least squares, shrunk toward 1 by RESIDUAL_PSEUDO ratings' worth
        # when the global logit rises with this user's ratings at all; when
        # it does not, the user's taste is unlike the global one and the
        # least-squares scale (zero or negative) stands alone.
        pseudo = RESIDUAL_PSEUDO * power / len(y) if agreement > 0 else 0.0
        beta = (agreement + pseudo) / (power + pseudo) if power > 0 else 0.0
        solver = Ridge(z, y - beta * guess)
        alpha = solver.best_alpha(GCV_ALPHAS)
        reporter.phase("residual", 1.0)
        personal = LogitSum.of(_ridge_head(solver.weights(alpha), solver.y_mean, scaling))
        # a * (beta * (guess - offset) + w . z) + c
        total = logit.scaled(beta) + personal + LogitSum.linear(np.zeros(len(scaling.mean)), -a * beta * offset)
        return total.head(scaling), {"residual_alpha": alpha, "residual_beta": beta}

    return fit


def blend_fit(members: dict[str, Fit]) -> Fit:
    """The mean of ``members``' logits, each fitted as it is alone."""

    def fit(
        x: np.ndarray, y: np.ndarray, images: Sequence[str], config: TrainingConfig, reporter: Reporter
    ) -> tuple[TrainedHead, dict[str, float]]:
        heads, chosen = [], {}
        for member in members.values():
            head, figures = member(x, y, images, config, reporter)
            heads.append(head)
            chosen.update(figures)
        return mean_of(heads, Standardiser.fit(x)), chosen

    return fit


def candidates(n: int, prior: Prior | None, base: RatingHead | None = None) -> dict[str, Fit]:
    """The candidates for ``n`` ratings, simplest first."""
    chosen: dict[str, Fit] = {RIDGE: fit_ridge}
    residual = base is not None and LogitSum.of(base).fits()
    # The residual candidate builds on the global head itself, of which the
    # prior is a linear copy (an MLP's a weaker one): with it, the prior
    # only adds a chance to pick the weaker head on a lucky split
    # (bench/learning.py: held-out Spearman 0.18 against 0.35 at 10
    # ratings, 0.41 against 0.45 at 100; selection +0.02 at 10 without it).
    if prior is not None and not residual:
        chosen[PRIOR] = prior_fit(prior)
    if base is not None and residual:
        chosen[RESIDUAL] = residual_fit(base)
        # The residual head's hidden units, plus the two that carry the linear part.
        if LogitSum.of(base).hidden + 4 <= MAX_HIDDEN:
            chosen[BLEND] = blend_fit({name: chosen[name] for name in BLENDED})
    chosen[CURRENT] = fit_current
    if n >= MLP_MIN_RATINGS:
        chosen[MLP_CANDIDATE] = fit_mlp
    return chosen


# ---- cross-validation and selection -------------------------------------------


def guard_threshold(n: int) -> float:
    return GUARD_Z / math.sqrt(max(1, n - 1))


def pick(
    spearmans: dict[str, float],
    maes: dict[str, float],
    n: int,
    spread: Spread | None = None,
    agreement: float | None = None,
) -> str:
    """The selected candidate (or NONE, or GLOBAL), as the module docstring
    says. ``spread``: the CV figures' noise (none: every difference counts);
    ``agreement``: the global taste's CV Spearman (none: no gate)."""
    threshold = guard_threshold(n)

    def se(a: str, b: str) -> float:
        return spread.se(a, b) if spread is not None else 0.0

    def beats_mean(c: str) -> bool:
        return spearmans[c] > threshold and maes[c] < maes[MEAN]

    personal = [c for c in CANDIDATES if c in spearmans]
    if agreement is not None and abs(agreement) <= threshold:
        personal = [c for c in personal if c not in GLOBAL_BASED]
    # Ridge unless another is better by more than the noise.
    contenders = [
        c for c in personal if c == RIDGE or spearmans[c] - spearmans[RIDGE] > max(TIE, Z_SELECT * se(c, RIDGE))
    ]
    pool = [c for c in contenders if beats_mean(c)] or contenders
    best = max(spearmans[c] for c in pool)
    if BLEND in pool and spearmans[BLEND] >= best - BLEND_TIE:
        choice = BLEND
    else:
        choice = next(c for c in pool if spearmans[c] >= best - TIE)
    if GLOBAL in spearmans and beats_mean(GLOBAL):
        margin = max(GLOBAL_MARGIN, Z_SELECT * se(GLOBAL, choice))
        return GLOBAL if not beats_mean(choice) or spearmans[GLOBAL] > spearmans[choice] + margin else choice
    # A global head that does not beat the mean on this user's ratings knows
    # nothing of their taste, or the opposite of it: a personal head, fitted
    # to their ratings, replaces it even where the guard cannot tell it from
    # noise yet (bench/learning.py: users whose taste opposes the global
    # one kept a global head scoring -0.37 where ridge scored +0.31, at 20
    # ratings).
    if beats_mean(choice) or GLOBAL in spearmans:
        return choice
    return NONE


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


def fit_candidate(
    name: str,
    data: TrainingData,
    config: TrainingConfig,
    prior: Prior | None = None,
    reporter: Reporter | None = None,
    base: RatingHead | None = None,
) -> tuple[TrainedHead, dict[str, float]]:
    """Candidate ``name`` fitted on all of ``data`` (the benchmark's entry
    to the same fits the selection uses)."""
    reporter = reporter or Reporter(lambda _: None, lambda: False, config.max_epochs)
    # (The prior is a candidate only without the residual one; fitted here when asked for.)
    fits = candidates(MLP_MIN_RATINGS if name == MLP_CANDIDATE else len(data), prior, base if name != PRIOR else None)
    features = np.ascontiguousarray(data.features, dtype=np.float32)
    return fits[name](features, data.ratings.astype(np.float64), data.images, config, reporter)


# ---- the whole procedure -------------------------------------------------------


def train_head(
    data: TrainingData,
    config: TrainingConfig,
    report: Callable[[ProgressReport], None] = lambda _: None,
    should_stop: Callable[[], bool] = lambda: False,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
    prior: Prior | None = None,
    keep_reference: bool = False,
    base: RatingHead | None = None,
) -> TrainingResult:
    """Cross-validates, selects, refits and evaluates a head as the module
    docstring says.

    ``reference`` maps raw held-out feature vectors to another predictor's
    ratings (the current global head) for comparison; with ``keep_reference``
    it is also the ``global`` choice (not when training the global head
    itself: the current one saw every rating). ``prior`` enables the
    ``prior`` candidate, ``base`` (the global head; never when training
    the global head itself) the ``residual`` and ``blend`` ones. Raises :class:`NotEnoughData` when the ratings
    cannot be split, and :class:`TrainingStopped` when ``should_stop``
    asked for it."""
    if len(data) < MIN_EXAMPLES:
        raise NotEnoughData(f"at least {MIN_EXAMPLES} ratings are needed to train, got {len(data)}")
    reporter = Reporter(report, should_stop, config.max_epochs)
    features = np.ascontiguousarray(data.features, dtype=np.float32)
    ratings = data.ratings.astype(np.float64)
    held = held_out_mask(data.images, config.validation_fraction, f"held-out:{config.seed}")
    train_images = [image for image, h in zip(data.images, held, strict=True) if not h]
    x_train, y_train = features[~held], ratings[~held]
    if len(set(train_images)) < 2:
        raise NotEnoughData(f"{len(train_images)} rating(s) left after the held-out ones: too few to cross-validate")

    with reporter.span(0.0, 0.7):
        cv = cross_validate(
            x_train, y_train, train_images, config, reporter, prior, reference if keep_reference else None, base
        )
    x_held, y_held = features[held], ratings[held]
    mean_prediction = np.full(len(y_held), y_train.mean())
    metrics = {
        **cv_metrics(cv),
        "mean_spearman": spearman(mean_prediction, y_held),
        "mean_mae": mean_absolute_error(mean_prediction, y_held),
        "train_examples": float(len(y_train)),
        "heldout_examples": float(len(y_held)),
    }
    if reference is not None:
        theirs = np.asarray(reference(x_held), dtype=np.float64)
        metrics["reference_spearman"] = spearman(theirs, y_held)
        metrics["reference_mae"] = mean_absolute_error(theirs, y_held)
    tried = {c: cv.spearman[c] for c in CHOICES if c in cv.spearman}
    if cv.selected in (NONE, GLOBAL):
        best = max(CANDIDATES, key=lambda c: cv.spearman.get(c, -math.inf))
        figures = (
            f"{cv.folds}-fold cross-validation on {len(y_train)} ratings (best personal candidate: {best}, "
            f"Spearman {cv.spearman[best]:.3f}, MAE {cv.mae[best]:.3f}"
        )
        if cv.selected == NONE:
            message = (
                f"no candidate beat predicting the mean rating in {figures}, against the {cv.threshold:.3f} "
                f"Spearman needed and the mean's MAE {cv.mae[MEAN]:.3f})"
            )
        else:
            message = (
                f"the global head predicts these ratings better than a personal head in {figures}; the global "
                f"head's Spearman {cv.spearman[GLOBAL]:.3f}, MAE {cv.mae[GLOBAL]:.3f})"
            )
        reporter.phase("evaluate", 1.0, 0.0)
        return TrainingResult(None, metrics, tried, cv.selected, message)

    fits = candidates(len(y_train), prior, base)
    reporter.check()
    with reporter.span(0.7, 0.85):
        judged, _ = fits[cv.selected](x_train, y_train, train_images, config, reporter)
    predicted = judged.predict(x_held)
    metrics["spearman"] = spearman(predicted, y_held)
    metrics["mae"] = mean_absolute_error(predicted, y_held)
    reporter.check()
    with reporter.span(0.85, 1.0):
        head, chosen = fits[cv.selected](features, ratings, data.images, config, reporter)
    metrics.update(chosen)
    reporter.phase("evaluate", 1.0, 0.0)
    return TrainingResult(head, metrics, tried, cv.selected)
