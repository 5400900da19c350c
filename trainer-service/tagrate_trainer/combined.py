"""Heads made of other heads, still in the rater's format
(:mod:`tagrate_common.vision.rating_heads`): a sum of logits is one head.

A head's logit on a raw feature vector ``x`` is, once its normalisation is
folded in, either ``v . x + c`` (linear) or ``w2 . relu(W1 x + b1) + b2``
(MLP). A weighted sum of such logits is again of that form: the hidden
units of every MLP term side by side (their output weights scaled), the
linear terms added up, the constants too. When there is no MLP term the
sum is a linear head; otherwise the linear part ``u = v . x`` rides along
as two more hidden units, ``relu(u) - relu(-u) = u``, so the sum is one MLP
head. The rater serves it as it serves any other head (a head's hidden
size is at most ``MAX_HIDDEN``).

The trainer uses this for the ``residual`` candidate (the global head's
logit, scaled, plus a personal linear part) and the ``blend`` candidate
(the mean of several heads' logits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tagrate_common.vision.rating_heads import MAX_HIDDEN, RatingHead

from .training import LINEAR, MLP, Standardiser, TrainedHead


@dataclass
class LogitSum:
    """``slope . x + constant + out . relu(w1 x + b1)`` on raw feature vectors."""

    slope: np.ndarray  # (D,)
    constant: float = 0.0
    w1: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (H, D)
    b1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    out: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def linear(cls, slope: np.ndarray, constant: float) -> LogitSum:
        slope = np.asarray(slope, dtype=np.float64)
        return cls(slope, float(constant), np.zeros((0, len(slope))))

    @classmethod
    def of(cls, head: RatingHead | TrainedHead) -> LogitSum:
        """A head's logit."""
        served = head.rating_head() if isinstance(head, TrainedHead) else head
        f = {name: np.asarray(a, dtype=np.float64) for name, a in served.folded.items()}
        if served.kind == LINEAR:
            return cls.linear(f["weight"], float(f["bias"]))
        return cls(np.zeros(f["w1"].shape[1]), float(f["b2"]), f["w1"], f["b1"], f["w2"])

    @property
    def hidden(self) -> int:
        return len(self.b1)

    def scaled(self, factor: float) -> LogitSum:
        return LogitSum(self.slope * factor, self.constant * factor, self.w1, self.b1, self.out * factor)

    def __add__(self, other: LogitSum) -> LogitSum:
        return LogitSum(
            self.slope + other.slope,
            self.constant + other.constant,
            np.concatenate([self.w1.reshape(-1, len(self.slope)), other.w1.reshape(-1, len(other.slope))]),
            np.concatenate([self.b1, other.b1]),
            np.concatenate([self.out, other.out]),
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The logits of raw feature vectors (N, D), in float64."""
        x = np.asarray(x, dtype=np.float64)
        logits = x @ self.slope + self.constant
        if self.hidden:
            logits = logits + np.maximum(x @ self.w1.T + self.b1, 0.0) @ self.out
        return logits

    def fits(self) -> bool:
        """Whether :meth:`head` can express it within ``MAX_HIDDEN`` units."""
        return not self.hidden or self.hidden + 2 <= MAX_HIDDEN

    def head(self, scaling: Standardiser) -> TrainedHead:
        """The head with this logit, normalising by ``scaling`` (any
        normalisation serves; the weights are moved onto it)."""
        mean, std = scaling.mean.astype(np.float64), scaling.std.astype(np.float64)
        # a . x + b  ==  (a * std) . z + (b + a . mean),  z = (x - mean) / std
        if not self.hidden:
            weight, bias = self.slope * std, self.constant + float(self.slope @ mean)
            return TrainedHead(
                LINEAR, {**scaling.tensors(), "weight": weight.astype(np.float32), "bias": np.float32(bias)}
            )
        if not self.fits():
            raise ValueError(f"{self.hidden} hidden units and a linear part need more than {MAX_HIDDEN}")
        w1 = np.concatenate([self.w1, self.slope[None, :], -self.slope[None, :]])
        b1 = np.concatenate([self.b1, [0.0, 0.0]])
        out = np.concatenate([self.out, [1.0, -1.0]])
        return TrainedHead(
            MLP,
            {
                **scaling.tensors(),
                "w1": (w1 * std).astype(np.float32),
                "b1": (b1 + w1 @ mean).astype(np.float32),
                "w2": out.astype(np.float32),
                "b2": np.float32(self.constant),
            },
        )


def mean_of(heads: Sequence[TrainedHead], scaling: Standardiser) -> TrainedHead:
    """The head whose logit is the mean of ``heads``' logits."""
    total = LogitSum.of(heads[0]).scaled(1.0 / len(heads))
    for head in heads[1:]:
        total = total + LogitSum.of(head).scaled(1.0 / len(heads))
    return total.head(scaling)
