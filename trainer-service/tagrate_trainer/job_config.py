"""What a training job is given and what it reports: its
:class:`~.training.TrainingConfig` from the trainer's settings, and its
figures as the status shows them."""

from __future__ import annotations

from .config import TrainerSettings
from .training import TrainingConfig


def training_config(settings: TrainerSettings) -> TrainingConfig:
    device = settings.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return TrainingConfig(
        max_epochs=settings.max_epochs,
        patience=settings.patience,
        validation_fraction=settings.validation_fraction,
        seed=settings.seed,
        batch_size=settings.batch_size,
        hidden_units=settings.hidden_units,
        learning_rate=settings.learning_rate,
        weight_decay=settings.weight_decay,
        device=device,
    )


def public_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The training's figures as reported: the comparison predictor is the
    global head, so ``reference_*`` become ``global_*``."""
    return {name.replace("reference_", "global_", 1): value for name, value in metrics.items()}
