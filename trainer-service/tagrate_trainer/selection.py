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
   ``cv_<name>_mae``. The candidates, simplest first:

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
   * ``current``: what the trainer fitted before (:func:`~.training.fit_current`);
   * ``mlp``: the MLP alone, from ``MLP_MIN_RATINGS`` ratings on.

   ``mean`` (predicting the training folds' mean) is the baseline: its
   Spearman correlation is 0 (it departs from the mean nowhere). ``global``
   is the global head as it serves now, when the caller has it: fitted on
   nothing here, it predicts every fold as it is (it was trained on
   everyone's ratings, this user's too, which flatters it a little; for a
   user with few ratings that share is small, and a user with many
   ratings has personal heads that win anyway).
3. **Selection and the guard.** The candidate with the highest CV
   Spearman wins, a near tie (within ``TIE``) going to the simpler, unless
   the global head beats it by ``GLOBAL_MARGIN``. A candidate
   qualifies only if it beats the mean: a CV Spearman above
   ``GUARD_Z / sqrt(n - 1)`` (a one-sided 5% test: 1.645 standard errors
   of a Spearman correlation of unrelated rankings, so ratings that carry
   no taste pass only by a rare chance) and a CV MAE below the mean's. When none qualifies
   (``selected_none``), or the global head wins (``selected_global``), the
   result has no head and nothing is published: whatever serves the user
   now (the global head, or a personal head from an earlier job) keeps
   serving.
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
from dataclasses import dataclass
from functools import partial

import numpy as np

from tagrate_common.vision.rating_heads import RatingHead

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
    early_stopped_mlp,
    fit_current,
    fit_mlp,
    held_out_mask,
    mean_absolute_error,
    spearman,
)

RIDGE, PRIOR, CURRENT, MLP_CANDIDATE = "ridge", "prior", "current", "mlp"
GLOBAL, MEAN, NONE = "global", "mean", "none"
# The heads a job can fit and publish, simplest first.
CANDIDATES = (RIDGE, PRIOR, CURRENT, MLP_CANDIDATE)
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
# A candidate beats the mean only with a CV Spearman above GUARD_Z / sqrt(n - 1).
GUARD_Z = 1.645
# From this many ratings on, FOLDS_FOR_MANY folds (when cv_folds is more).
MANY_RATINGS, FOLDS_FOR_MANY = 500, 3
LEVELS = 6  # rating levels 0, 1/6, ..., 1


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
class CrossValidation:
    folds: int
    spearman: dict[str, float]  # per candidate, and MEAN
    mae: dict[str, float]
    selected: str  # a candidate, or NONE
    threshold: float  # the CV Spearman a candidate had to beat


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


def candidates(n: int, prior: Prior | None) -> dict[str, Fit]:
    """The candidates for ``n`` ratings, simplest first."""
    chosen: dict[str, Fit] = {RIDGE: fit_ridge}
    if prior is not None:
        chosen[PRIOR] = prior_fit(prior)
    chosen[CURRENT] = fit_current
    if n >= MLP_MIN_RATINGS:
        chosen[MLP_CANDIDATE] = fit_mlp
    return chosen


# ---- cross-validation and selection -------------------------------------------


def guard_threshold(n: int) -> float:
    return GUARD_Z / math.sqrt(max(1, n - 1))


def pick(spearmans: dict[str, float], maes: dict[str, float], n: int) -> str:
    """The selected candidate (or NONE), as the module docstring says."""
    threshold = guard_threshold(n)
    qualified = [c for c in CHOICES if c in spearmans and spearmans[c] > threshold and maes[c] < maes[MEAN]]
    personal = [c for c in qualified if c != GLOBAL]
    if GLOBAL in qualified and (
        not personal or spearmans[GLOBAL] > max(spearmans[c] for c in personal) + GLOBAL_MARGIN
    ):
        return GLOBAL
    if not personal:
        return NONE
    best = max(spearmans[c] for c in personal)
    return next(c for c in personal if spearmans[c] >= best - TIE)


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    images: Sequence[str],
    config: TrainingConfig,
    reporter: Reporter,
    prior: Prior | None = None,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
) -> CrossValidation:
    """Every candidate's pooled out-of-fold figures, and the selection.
    ``reference``: the global head's predictions for raw feature vectors,
    scored as the ``global`` choice (fitted on nothing here)."""
    distinct = len(set(images))
    # Fewer folds for many ratings: each fold's fits cost more, and the
    # figures need less averaging.
    folds = min(config.cv_folds if len(y) < MANY_RATINGS else min(config.cv_folds, FOLDS_FOR_MANY), distinct)
    fold = stratified_folds(images, y, folds, config.seed)
    fits = candidates(len(y), prior)
    predictions = {name: np.empty(len(y)) for name in (*fits, MEAN)}
    if reference is not None:
        predictions[GLOBAL] = np.asarray(reference(x), dtype=np.float64)
    fold_means = np.empty(len(y))
    steps = folds * len(fits)
    for f in range(folds):
        inside = fold != f
        images_in = [image for image, keep in zip(images, inside, strict=True) if keep]
        predictions[MEAN][~inside] = fold_means[~inside] = y[inside].mean()
        x_in, y_in = x[inside], y[inside]
        early: EarlyStopped | None = None  # one MLP run serves both candidates that need it
        for i, (name, fit) in enumerate(fits.items()):
            reporter.check()
            step = f * len(fits) + i
            with reporter.span(step / steps, (step + 1) / steps):
                if name in (CURRENT, MLP_CANDIDATE):
                    early = early or early_stopped_mlp(x_in, y_in, images_in, config, reporter)
                    fit = partial(fit, early=early)
                head, _ = fit(x_in, y_in, images_in, config, reporter)
                predictions[name][~inside] = head.predict(x[~inside])
    # Ranked as departures from each fold's mean: a head predicts around the
    # mean of the ratings it was fitted on, and a fold whose ratings run low
    # has the others' higher mean; pooled raw predictions would rank those
    # means against the folds' ratings and penalise every weak head for it.
    spearmans = {name: spearman(p - fold_means, y) for name, p in predictions.items()}
    maes = {name: mean_absolute_error(p, y) for name, p in predictions.items()}
    return CrossValidation(folds, spearmans, maes, pick(spearmans, maes, len(y)), guard_threshold(len(y)))


def cv_metrics(cv: CrossValidation) -> dict[str, float]:
    """The figures a job reports: ``cv_<name>_spearman`` / ``_mae`` per
    candidate and for ``mean``, ``cv_folds``, ``cv_threshold``, and
    ``selected_<name>`` = 1 for the selected one (``selected_none`` when
    none beat the mean)."""
    metrics = {"cv_folds": float(cv.folds), "cv_threshold": cv.threshold, f"selected_{cv.selected}": 1.0}
    for name in cv.spearman:
        metrics[f"cv_{name}_spearman"] = cv.spearman[name]
        metrics[f"cv_{name}_mae"] = cv.mae[name]
    return metrics


def fit_candidate(
    name: str,
    data: TrainingData,
    config: TrainingConfig,
    prior: Prior | None = None,
    reporter: Reporter | None = None,
) -> tuple[TrainedHead, dict[str, float]]:
    """Candidate ``name`` fitted on all of ``data`` (the benchmark's entry
    to the same fits the selection uses)."""
    reporter = reporter or Reporter(lambda _: None, lambda: False, config.max_epochs)
    fits = candidates(MLP_MIN_RATINGS if name == MLP_CANDIDATE else len(data), prior)
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
) -> TrainingResult:
    """Cross-validates, selects, refits and evaluates a head as the module
    docstring says.

    ``reference`` maps raw held-out feature vectors to another predictor's
    ratings (the current global head) for comparison; with ``keep_reference``
    it is also the ``global`` choice (not when training the global head
    itself: the current one saw every rating). ``prior`` enables the
    ``prior`` candidate. Raises :class:`NotEnoughData` when the ratings
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
            x_train, y_train, train_images, config, reporter, prior, reference if keep_reference else None
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

    fits = candidates(len(y_train), prior)
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
