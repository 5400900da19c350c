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
   * ``current``: what the trainer fitted before (:func:`tagrate_trainer.mlp.fit_current`);
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
     the global head's or, without one, its linear prior's) above
     ``AGREE_Z / sqrt(n - 1)`` or below ``-AGREE_Z_AGAINST / sqrt(n - 1)``
     (stricter than the guard, and stricter still for a taste turned
     round: issue 26, chance agreements let turned-round heads in).
   * ``ridge`` is kept unless another candidate's CV Spearman exceeds
     ridge's by more than ``Z_SELECT`` standard errors of the difference
     (two; one, ``Z_SELECT_MANY``, from ``Z_MANY_RATINGS`` ratings on)
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
     (``selected_global``) only when its CV Spearman is higher than the
     chosen head's by ``GLOBAL_MARGIN`` and by those standard errors, also
     where the chosen head does not beat the mean (issue 26: a global head
     that passed the guard by chance was kept over a ridge head that just
     missed it). Otherwise, and with a global head that does not beat
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

import math
from collections.abc import Callable

import numpy as np

from tagrate_common.vision.rating_heads import RatingHead

from ..training import (
    MIN_EXAMPLES,
    NotEnoughData,
    ProgressReport,
    Reporter,
    TrainingConfig,
    TrainingData,
    TrainingResult,
    held_out_mask,
    mean_absolute_error,
    spearman,
)
from .candidates import CANDIDATES, CHOICES, GLOBAL, MEAN, NONE, Prior, candidates
from .crossval import cross_validate, cv_metrics

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
