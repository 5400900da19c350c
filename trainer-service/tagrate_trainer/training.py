"""Training a rating head on cached feature vectors: no gRPC, no database.

The heads are the rater's (:mod:`tagrate_common.vision.rating_heads`): on the standardised
feature vector ``z``, ``linear`` is ``sigmoid(w . z + b)`` and ``mlp`` is
``sigmoid(w2 . relu(w1 z + b1) + b2)``. This module holds the pieces: the
figures, the seeded held-out split, standardisation, the ridge head (ridge
regression put through the sigmoid so that the head matches the ridge
prediction's value and slope at the mean rating; the sigmoid only bends the
extremes back into [0, 1]), the MLP (one hidden layer, AdamW on the squared
error of the sigmoid output, early stopping when a selection part's loss has
not improved for ``patience`` epochs), and :func:`fit_current`, the head the
trainer fitted before cross-validation chose among candidates. The whole
procedure, and the choice, is :mod:`.selection`.

Training is cooperative: ``should_stop`` is checked after every mini-batch
and between phases, and :class:`TrainingStopped` is raised as soon as it
returns true.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tagrate_common.vision.rating_heads import RatingHead, serialize_weights

from .ridge import Ridge

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


@dataclass
class _MlpRun:
    model: nn.Sequential
    best_epoch: int
    best_loss: float


@contextmanager
def _seeded_global_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global generator (CPU, and ``device`` when a GPU) seeded
    with ``seed`` inside, restored on leaving. Dropout draws its masks from
    the global generator, which torch seeds at random in every process:
    without this, the same data and seed trained a different MLP in each
    process (and a run's draws depended on what ran before it)."""
    devices = (
        [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    )
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def mlp_module(d: int, y_mean: float, config: TrainingConfig) -> nn.Sequential:
    """The MLP candidate before training: seeded, predicting ``y_mean``."""
    with _seeded_global_rng(config.seed, torch.device("cpu")):
        model = nn.Sequential(
            nn.Linear(d, config.hidden_units),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden_units, 1),
        )
    # Start from predicting the mean rating, with a small output layer: from
    # the default initialisation the first epochs would only learn the
    # offset, and on a few ratings early stopping could end the run first.
    with torch.no_grad():
        model[3].weight.mul_(0.1)
        model[3].bias.fill_(_logit(min(1.0 - MEAN_CLAMP, max(MEAN_CLAMP, y_mean))))
    return model


def _train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    config: TrainingConfig,
    reporter: Reporter,
    phase: str,
    epochs: int,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
) -> _MlpRun:
    """Trains for up to ``epochs`` epochs. With ``validation`` data, stops
    after ``patience`` epochs without a lower validation loss and returns
    the best epoch's weights; without, trains exactly ``epochs`` epochs.
    Every random draw is seeded by ``config.seed``: the initialisation
    (:func:`mlp_module`), the shuffles (a local generator) and the dropout
    masks (the global generator, seeded here and restored after)."""
    device = torch.device(config.device)
    with _seeded_global_rng(config.seed, device):
        return _train_epochs(x, y, config, reporter, phase, epochs, validation, device)


def _train_epochs(
    x: np.ndarray,
    y: np.ndarray,
    config: TrainingConfig,
    reporter: Reporter,
    phase: str,
    epochs: int,
    validation: tuple[np.ndarray, np.ndarray] | None,
    device: torch.device,
) -> _MlpRun:
    model = mlp_module(x.shape[1], float(y.mean()), config).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y.astype(np.float32)).to(device)
    xv = torch.from_numpy(validation[0]).to(device) if validation else None
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_epoch, best_loss = 0, math.inf
    n = len(xt)
    reporter.epochs, reporter.epoch = epochs, 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for begin in range(0, n, config.batch_size):
            reporter.check()
            idx = order[begin : begin + config.batch_size]
            optimiser.zero_grad(set_to_none=True)
            loss = nn.functional.mse_loss(torch.sigmoid(model(xt[idx])[:, 0]), yt[idx])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        reporter.epoch, reporter.loss = epoch, total / n
        seconds_per_epoch = (time.perf_counter() - start) / epoch
        if validation is None:
            reporter.phase(phase, epoch / epochs, (epochs - epoch) * seconds_per_epoch)
            continue
        assert xv is not None
        model.eval()
        with torch.no_grad():
            val_loss = _mse(torch.sigmoid(model(xv)[:, 0]).cpu().numpy(), validation[1])
        if val_loss < best_loss - 1e-9:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        last = min(epochs, best_epoch + config.patience)
        # The epochs early stopping may still run, then a refit on 1/(1-f)
        # times the data for the best epoch count (if the MLP wins).
        refit = best_epoch * seconds_per_epoch / (1.0 - config.validation_fraction)
        reporter.phase(phase, epoch / last, (last - epoch) * seconds_per_epoch + refit)
        if epoch >= last:
            break
    if validation is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = epochs
    model.eval()
    return _MlpRun(model, best_epoch, best_loss)


def _mlp_head(model: nn.Sequential, standardiser: Standardiser) -> TrainedHead:
    first, last = model[0], model[3]

    def array(t: torch.Tensor) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32)

    return TrainedHead(
        MLP,
        {
            **standardiser.tensors(),
            "w1": array(first.weight),
            "b1": array(first.bias),
            "w2": array(last.weight[0]),
            "b2": array(last.bias[0]),
        },
    )


# ---- the current head: ridge or MLP, chosen on a split -------------------------


@dataclass
class EarlyStopped:
    """An MLP early-stopped on a split of some ratings (``selection`` marks
    the selection part), with the standardisation of the fitting part."""

    run: _MlpRun
    scaling: Standardiser
    selection: np.ndarray


def early_stopped_mlp(
    x: np.ndarray, y: np.ndarray, images: Sequence[str], config: TrainingConfig, reporter: Reporter
) -> EarlyStopped:
    """The MLP trained on part of ``x`` until the rest's loss stops improving."""
    selection = held_out_mask(images, config.validation_fraction, f"selection:{config.seed}")
    scaling = Standardiser.fit(x[~selection])
    xf, xs = scaling.apply(x[~selection]), scaling.apply(x[selection])
    run = _train_mlp(xf, y[~selection], config, reporter, "mlp", config.max_epochs, (xs, y[selection]))
    return EarlyStopped(run, scaling, selection)


def fit_current(
    x: np.ndarray,
    y: np.ndarray,
    images: Sequence[str],
    config: TrainingConfig,
    reporter: Reporter,
    early: EarlyStopped | None = None,
) -> tuple[TrainedHead, dict[str, float]]:
    """The head this trainer fitted before candidates were cross-validated:
    ridge over a penalty grid and an early-stopped MLP, fitted on part of
    ``x`` and chosen by the rest's mean squared error (a tie goes to the
    linear head), then the winner refitted on all of ``x`` with the chosen
    penalty or epoch count. ``early``: the MLP run, when the caller already
    has it for the same data. Returns the head and what was chosen
    (``ridge_alpha`` or ``mlp_epochs``)."""
    with reporter.span(0.0, 0.7):
        early = early or early_stopped_mlp(x, y, images, config, reporter)
    selection, fit_scaling = early.selection, early.scaling
    y_fit, y_sel = y[~selection], y[selection]
    reporter.check()
    xf, xs = fit_scaling.apply(x[~selection]), fit_scaling.apply(x[selection])
    solver = Ridge(xf, y_fit)
    a, c = _ridge_link(solver.y_mean)
    ridge_losses = {
        alpha: _mse(_sigmoid(a * (xs.astype(np.float64) @ solver.weights(alpha)) + c), y_sel)
        for alpha in config.ridge_alphas
    }
    alpha = min(ridge_losses, key=lambda k: (ridge_losses[k], -k))  # a tie goes to the stronger penalty
    with reporter.span(0.7, 0.75):
        reporter.phase("ridge", 1.0)
    kind = MLP if early.run.best_loss < ridge_losses[alpha] else LINEAR

    reporter.check()
    scaling = Standardiser.fit(x)
    with reporter.span(0.75, 1.0):
        if kind == LINEAR:
            refit = Ridge(scaling.apply(x), y)
            head = _ridge_head(refit.weights(alpha), refit.y_mean, scaling)
            reporter.phase("refit", 1.0)
            return head, {"ridge_alpha": float(alpha)}
        return fit_mlp(x, y, images, config, reporter, early)


def fit_mlp(
    x: np.ndarray,
    y: np.ndarray,
    images: Sequence[str],
    config: TrainingConfig,
    reporter: Reporter,
    early: EarlyStopped | None = None,
) -> tuple[TrainedHead, dict[str, float]]:
    """The MLP alone: early-stopped on a split of ``x`` (as in
    :func:`fit_current`; ``early`` when the caller already has that run),
    then refitted on all of ``x`` for the best epoch count."""
    if early is None:
        with reporter.span(0.0, 0.75):
            early = early_stopped_mlp(x, y, images, config, reporter)
    reporter.check()
    scaling = Standardiser.fit(x)
    with reporter.span(0.75, 1.0):
        run = _train_mlp(scaling.apply(x), y, config, reporter, "refit", max(1, early.run.best_epoch))
    return _mlp_head(run.model, scaling), {"mlp_epochs": float(early.run.best_epoch)}
