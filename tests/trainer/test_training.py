"""The training core on synthetic feature vectors: figures, the split,
learning, stopping, progress, and heads the rater reads exactly."""

from __future__ import annotations

import numpy as np
import pytest

from tagrate_common.vision.rating_heads import RatingHead, deserialize_weights
from tagrate_trainer.selection import train_head
from tagrate_trainer.selection.candidates import CANDIDATES, NONE, Prior, fit_candidate
from tagrate_trainer.training import (
    LINEAR,
    MLP,
    NotEnoughData,
    ProgressReport,
    TrainingConfig,
    TrainingData,
    TrainingStopped,
    average_ranks,
    held_out_mask,
    mean_absolute_error,
    spearman,
)

DIMENSIONS = 64
FAST = TrainingConfig(max_epochs=30, patience=5, hidden_units=32)


def linear_taste(n: int, seed: int = 0, noise: float = 0.05, dims: int = DIMENSIONS) -> TrainingData:
    """Features with a per-dimension offset and scale (like a backbone's),
    rated by a fixed linear taste plus noise."""
    rng = np.random.default_rng(seed)
    scale, offset = rng.uniform(0.1, 3.0, dims), rng.uniform(0.0, 2.0, dims)
    z = rng.normal(size=(n, dims))
    direction = np.random.default_rng(99).normal(size=dims) / np.sqrt(dims)
    ratings = np.clip(0.5 + 0.2 * (z @ direction) + rng.normal(0.0, noise, n), 0.0, 1.0)
    features = (z * scale + offset).astype(np.float32)
    return TrainingData(features, ratings.astype(np.float32), [f"image-{seed}-{i}" for i in range(n)])


def test_ranks_average_ties():
    assert average_ranks(np.array([10.0, 30.0, 20.0, 20.0])).tolist() == [0.0, 3.0, 1.5, 1.5]


def test_spearman_figures():
    actual = np.array([0.1, 0.4, 0.2, 0.9])
    assert spearman(actual * 3 + 1, actual) == pytest.approx(1.0)
    assert spearman(-actual, actual) == pytest.approx(-1.0)
    # Monotone but not linear still ranks perfectly.
    assert spearman(np.exp(actual * 10), actual) == pytest.approx(1.0)
    # A constant prediction orders nothing.
    assert spearman(np.full(4, 0.5), actual) == 0.0
    assert spearman(np.array([1.0, 2.0, 4.0, 3.0]), np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(0.8)
    assert mean_absolute_error(np.array([0.0, 1.0]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_held_out_split_is_seeded_grouped_and_stable():
    images = [f"img{i}" for i in range(400)]
    mask = held_out_mask(images, 0.2, "s")
    assert mask.tolist() == held_out_mask(images, 0.2, "s").tolist()
    assert mask.tolist() != held_out_mask(images, 0.2, "other").tolist()
    assert 40 < mask.sum() < 120
    # More images later: the first ones stay on their side.
    grown = held_out_mask([*images, *(f"new{i}" for i in range(100))], 0.2, "s")
    assert grown[:400].tolist() == mask.tolist()
    # Every rating of an image goes the same way (user=all).
    repeated = [image for image in images[:50] for _ in range(3)]
    grouped = held_out_mask(repeated, 0.2, "s").reshape(50, 3)
    assert (grouped.all(axis=1) | ~grouped.any(axis=1)).all()


def test_held_out_split_keeps_one_on_each_side_of_tiny_data():
    for salt in map(str, range(30)):
        mask = held_out_mask(["a", "b", "c"], 0.2, salt)
        assert 1 <= mask.sum() <= 2
    with pytest.raises(NotEnoughData):
        held_out_mask(["same", "same", "same"], 0.2, "s")


def test_learns_a_linear_taste_and_beats_the_mean():
    result = train_head(linear_taste(300), FAST)
    metrics = result.metrics
    assert metrics["spearman"] > 0.7
    assert metrics["mae"] < 0.8 * metrics["mean_mae"]
    assert metrics["mean_spearman"] == 0.0
    assert metrics["train_examples"] + metrics["heldout_examples"] == 300
    assert result.head.kind in (LINEAR, MLP)
    # 240 cross-validated ratings: every candidate but the prior (no global head).
    assert set(result.cv_spearman) == {"ridge", "current", "mlp"}
    for name in ("ridge", "current", "mlp", "mean"):
        assert {f"cv_{name}_spearman", f"cv_{name}_mae"} <= set(metrics)
    assert metrics[f"selected_{result.selected}"] == 1.0
    assert result.cv_spearman[result.selected] == max(result.cv_spearman.values()) or result.selected == "ridge"


# The guard is statistical: shuffle 6 happens to correlate with the
# features (GCV ridge finds Spearman 0.2 on 240 ratings, p ~ 0.001), and
# rightly passes. These three do not.
@pytest.mark.parametrize("seed", [5, 7, 8])
def test_random_ratings_teach_nothing_and_produce_no_head(seed):
    data = linear_taste(300)
    shuffled = TrainingData(data.features, np.random.default_rng(seed).permutation(data.ratings), data.images)
    result = train_head(shuffled, FAST)
    assert result.head is None and result.selected == NONE
    assert result.metrics["selected_none"] == 1.0
    assert "no candidate beat predicting the mean" in result.message
    assert "spearman" not in result.metrics  # no head, no held-out figures of one


@pytest.mark.parametrize("base_kind", [MLP, LINEAR])
@pytest.mark.parametrize("candidate", CANDIDATES)
def test_every_candidate_is_a_head_the_rater_serves(candidate, base_kind):
    data = linear_taste(200)
    prior = Prior(np.random.default_rng(3).normal(size=DIMENSIONS))
    # A global head fitted on another user's ratings, for residual and blend.
    other = linear_taste(200, seed=2)
    base = fit_candidate("mlp" if base_kind == MLP else "ridge", other, FAST)[0].rating_head()
    head, chosen = fit_candidate(candidate, data, FAST, prior, base=base)
    assert head.kind in (LINEAR, MLP) and chosen
    if candidate in ("residual", "blend"):
        # On top of an MLP global head, its hidden units and two for the linear part (twice for a blend).
        assert head.kind == base_kind
        if base_kind == MLP:
            assert head.rating_head().hidden == FAST.hidden_units + (2 if candidate == "residual" else 4)
    served = RatingHead.from_tensors(head.kind, deserialize_weights(head.weights()), DIMENSIONS)
    predicted = served.predict(data.features)
    assert np.allclose(predicted, head.predict(data.features), atol=1e-6)
    assert ((predicted >= 0.0) & (predicted <= 1.0)).all()


def test_training_is_reproducible():
    data = linear_taste(150)
    first, second = train_head(data, FAST), train_head(data, FAST)
    assert first.metrics == second.metrics
    assert first.head.weights() == second.head.weights()


def test_progress_rises_to_one_with_epochs_and_loss():
    reports: list[ProgressReport] = []
    train_head(linear_taste(200), FAST, report=reports.append)
    progress = [r.progress for r in reports]
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert any(r.phase == "mlp" and r.epoch >= 1 and r.loss is not None for r in reports)
    assert any(r.phase == "mlp" and r.eta_seconds is not None and r.eta_seconds > 0 for r in reports)


def test_stop_is_checked_during_the_epochs():
    calls = 0

    def stop_after_a_few() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(TrainingStopped):
        train_head(linear_taste(500), TrainingConfig(max_epochs=1000, patience=1000), should_stop=stop_after_a_few)
    assert calls == 6


def test_reference_figures_are_reported():
    data = linear_taste(200)
    metrics = train_head(data, FAST, reference=lambda x: np.full(len(x), 0.5)).metrics
    assert metrics["reference_spearman"] == 0.0
    assert metrics["reference_mae"] > 0


def test_too_few_ratings_cannot_train():
    with pytest.raises(NotEnoughData):
        train_head(linear_taste(2), FAST)
