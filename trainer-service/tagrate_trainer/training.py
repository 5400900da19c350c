"""Training a rating head on cached feature vectors: no gRPC, no database.

The heads are the rater's (:mod:`tagrate_common.vision.rating_heads`): on the standardised
feature vector ``z``, ``linear`` is ``sigmoid(w . z + b)`` and ``mlp`` is
``sigmoid(w2 . relu(w1 z + b1) + b2)``. This module holds the pieces: the
figures, the seeded held-out split, standardisation, the ridge head (ridge
regression put through the sigmoid so that the head matches the ridge
prediction's value and slope at the mean rating; the sigmoid only bends the
extremes back into [0, 1]) and the progress reporter. The MLP and
:func:`~.mlp.fit_current`, the head the trainer fitted before
cross-validation chose among candidates, are :mod:`.mlp`. The whole
procedure, and the choice, is :mod:`.selection`.

Training is cooperative: ``should_stop`` is checked after every mini-batch
and between phases, and :class:`TrainingStopped` is raised as soon as it
returns true.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from tagrate_common.vision.rating_heads import RatingHead, serialize_weights

LINEAR, MLP = "linear", "mlp"
# Ridge penalties tried on standardised features. A wide log grid costs
# little: every penalty reuses one eigendecomposition.
RIDGE_ALPHAS = tuple(float(10.0**k) for k in np.arange(-1.0, 6.01, 0.5))
# Features whose spread is below this are constant in the training data;
# dividing by their (near-zero) deviation would only amplify noise.
MIN_STD = 1e-6
# No feature's deviation counts as less than this share of the median one:
# a feature (nearly) dead on the rated images would be divided by almost
# nothing, and an unseen image that does light it up would get a huge
# standardised value and an extreme rating (seen: a scene rated 0.9996
# against its taste, from one feature 1,800 deviations out).
STD_FLOOR = 0.1
# The mean rating the sigmoid is matched at stays inside (0, 1), so its
# logit is finite even when every rating is 0 or 1.
MEAN_CLAMP = 0.02
MIN_EXAMPLES = 3


class TrainingStopped(Exception):
    """``should_stop`` returned true; nothing was produced."""


class NotEnoughData(ValueError):
    """Too few ratings (or different images) to hold any out."""


@dataclass(frozen=True)
class TrainingData:
    """``features[i]`` describes ``images[i]``, rated ``ratings[i]``."""

    features: np.ndarray  # (n, d) float32
    ratings: np.ndarray  # (n,) in [0, 1]
    images: Sequence[str]

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.features.ndim != 2 or self.features.shape[0] != n or self.ratings.shape != (n,):
            raise ValueError(f"features {self.features.shape}, ratings {self.ratings.shape} and {n} images disagree")

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class TrainingConfig:
    max_epochs: int = 200
    patience: int = 12
    validation_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 64
    hidden_units: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    dropout: float = 0.1
    device: str = "cpu"
    ridge_alphas: tuple[float, ...] = RIDGE_ALPHAS
    cv_folds: int = 5


@dataclass(frozen=True)
class ProgressReport:
    """Where a training stands. ``progress`` covers the training (0-1);
    ``epoch``/``epochs`` count MLP epochs in the current phase."""

    phase: str
    progress: float
    epoch: int
    epochs: int
    loss: float | None
    eta_seconds: float | None


@dataclass(frozen=True)
class TrainedHead:
    """A head in the rater's weights format (see :mod:`tagrate_common.vision.rating_heads`)."""

    kind: str
    tensors: dict[str, np.ndarray]

    def rating_head(self) -> RatingHead:
        return RatingHead.from_tensors(self.kind, self.tensors, int(self.tensors["mean"].shape[0]))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Ratings exactly as the rater computes them."""
        return self.rating_head().predict(features)

    def weights(self) -> bytes:
        """PublishHead's ``weights`` bytes."""
        return serialize_weights(self.tensors)


@dataclass(frozen=True)
class TrainingResult:
    """What :func:`tagrate_trainer.selection.train_head` produced: ``head``
    is None when no candidate beat predicting the mean rating in
    cross-validation (then nothing should be published; ``message`` says why)."""

    head: TrainedHead | None
    # Held-out figures (spearman, mae, mean_*, reference_*), the split sizes,
    # every candidate's cross-validation figures, what was selected.
    metrics: dict[str, float]
    # Cross-validated Spearman correlation of each candidate tried.
    cv_spearman: dict[str, float]
    selected: str
    message: str = ""


# ---- figures ---------------------------------------------------------------


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, tied values sharing the mean of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Spearman's rank correlation; 0.0 when either side is constant (a
    constant prediction orders nothing, so it earns no correlation)."""
    if len(actual) < 2:
        return 0.0
    a, b = average_ranks(predicted), average_ranks(actual)
    a, b = a - a.mean(), b - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denominator) if denominator > 0 else 0.0


def mean_absolute_error(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(predicted, np.float64) - np.asarray(actual, np.float64))))


def _mse(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean((np.asarray(predicted, np.float64) - actual) ** 2))


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * logits))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# ---- the split -------------------------------------------------------------


def _position(salt: str, image: str) -> float:
    """A seeded, uniform-looking number in [0, 1) for an image name."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{image}".encode()).digest()[:8], "big") / 2.0**64


def held_out_mask(images: Sequence[str], fraction: float, salt: str) -> np.ndarray:
    """True for the examples held out: those whose image's seeded hash
    position is below ``fraction``. Whole images go one way, and an image
    stays on its side however many ratings are added later. At least one
    image is held out and at least one stays in (the lowest and the highest
    positions), however few there are."""
    positions = {image: _position(salt, image) for image in images}
    if len(positions) < 2:
        raise NotEnoughData(
            f"{len(images)} rating(s) of {len(positions)} image(s): at least two different images are needed"
        )
    chosen = {image for image, position in positions.items() if position < fraction}
    if not chosen:
        chosen = {min(positions, key=positions.__getitem__)}
    if len(chosen) == len(positions):
        chosen.discard(max(positions, key=positions.__getitem__))
    return np.fromiter((image in chosen for image in images), dtype=bool, count=len(images))


# ---- standardisation and the two candidates ----------------------------------


@dataclass(frozen=True)
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardiser:
        x = features.astype(np.float64)
        std = x.std(axis=0)
        floor = max(MIN_STD, STD_FLOOR * float(np.median(std)))
        return cls(x.mean(axis=0), np.where(std < MIN_STD, 1.0, np.maximum(std, floor)))

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features.astype(np.float64) - self.mean) / self.std).astype(np.float32)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.astype(np.float32), "std": self.std.astype(np.float32)}


def _ridge_link(y_mean: float) -> tuple[float, float]:
    """``(a, c)`` such that ``sigmoid(a * s + c)`` has the value ``y_mean``
    and slope 1 at ``s = 0``: the sigmoid head closest to the linear
    prediction ``y_mean + s`` around the mean."""
    m = min(1.0 - MEAN_CLAMP, max(MEAN_CLAMP, y_mean))
    return 1.0 / (m * (1.0 - m)), _logit(m)


def _ridge_head(w: np.ndarray, y_mean: float, standardiser: Standardiser) -> TrainedHead:
    a, c = _ridge_link(y_mean)
    return TrainedHead(LINEAR, {**standardiser.tensors(), "weight": (a * w).astype(np.float32), "bias": np.float32(c)})


class Reporter:
    """Maps phase-local progress onto 0-1, never backwards, and checks for
    a stop request. :meth:`span` narrows where the next phases land, so a
    procedure reports 0-1 of its own work wherever its caller runs it."""

    def __init__(self, report: Callable[[ProgressReport], None], should_stop: Callable[[], bool], epochs: int):
        self._report = report
        self._should_stop = should_stop
        self.epochs = epochs
        self.progress = 0.0
        self.epoch = 0
        self.loss: float | None = None
        self._low, self._high = 0.0, 1.0

    def check(self) -> None:
        if self._should_stop():
            raise TrainingStopped()

    @contextmanager
    def span(self, low: float, high: float) -> Iterator[None]:
        """Phases reported inside land in [low, high] of the current span."""
        outer = self._low, self._high
        width = self._high - self._low
        self._low, self._high = self._low + width * low, self._low + width * high
        try:
            yield
        finally:
            self._low, self._high = outer

    def phase(self, name: str, fraction: float, eta_seconds: float | None = None) -> None:
        done = self._low + (self._high - self._low) * min(1.0, max(0.0, fraction))
        self.progress = max(self.progress, done)
        self._report(ProgressReport(name, self.progress, self.epoch, self.epochs, self.loss, eta_seconds))


log = logging.getLogger(__name__)


def lower_thread_priority(nice: int) -> None:
    """Lowers the calling thread's CPU priority by ``nice`` (Linux gives
    each thread its own nice value; elsewhere this does nothing). The job's
    thread ends with the job, so nothing needs raising back."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError as exc:  # not allowed here (a sandbox): the job still runs
        log.warning("could not lower the automatic job's CPU priority: %s", exc)
