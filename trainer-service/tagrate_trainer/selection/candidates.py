"""The heads a job can fit (step 2 of :mod:`tagrate_trainer.selection`'s
docstring): their names, the global prior, one fit per candidate, and
:func:`fit_candidate` (the benchmark's entry to the same fits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tagrate_common.vision.rating_heads import MAX_HIDDEN, RatingHead

from ..combined import LogitSum, mean_of
from ..mlp import fit_current, fit_mlp
from ..ridge import GCV_ALPHAS, Ridge
from ..training import (
    LINEAR,
    Reporter,
    Standardiser,
    TrainedHead,
    TrainingConfig,
    TrainingData,
    TrainingResult,
    _ridge_head,
    _ridge_link,
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
# The MLP needs this many ratings before it is worth cross-validating.
MLP_MIN_RATINGS = 200


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
