"""The MLP head (one hidden layer, AdamW on the squared error of the
sigmoid output, early stopping when a selection part's loss has not
improved for ``patience`` epochs) and :func:`fit_current`, the head the
trainer fitted before cross-validation chose among candidates (ridge or
MLP, chosen on a split). The pieces both use are :mod:`.training`."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .ridge import Ridge
from .training import (
    LINEAR,
    MEAN_CLAMP,
    MLP,
    Reporter,
    Standardiser,
    TrainedHead,
    TrainingConfig,
    _logit,
    _mse,
    _ridge_head,
    _ridge_link,
    _sigmoid,
    held_out_mask,
)


def warm_up() -> None:
    """Imports now what torch imports lazily on the first optimizer a
    process makes (torch._dynamo, hundreds of modules): the trainer runs it
    on a thread at its start, so the first training after a start, often an
    automatic one at a lowered priority, does not pay for it. Measured on the
    shared 2-core machine at load average 23: 47 s for the first AdamW after
    ``import torch``."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


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
