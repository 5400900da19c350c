"""The learning curve's draws, shared by ``bench learning`` and its replay
(``--replay``), so that both see the same global head, users and splits
for a seed: the replay's figures are the curve's only while they draw
alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagrate_common.vision.rating_heads import RatingHead
from tagrate_trainer.selection import train_head
from tagrate_trainer.selection.candidates import Prior, global_prior
from tagrate_trainer.training import TrainedHead, TrainingConfig, TrainingData, TrainingResult

from .tastes import Tastes, rate

# Ratings each of the other users gives to train the global head.
OTHER_RATINGS = 150
# Held-out images per split.
TEST_IMAGES = 300


def pool_and_rest(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The images the other users rate (a third) and the ones the test users
    and their test sets are drawn from (the rest)."""
    order = rng.permutation(n)
    return order[: n // 3], order[n // 3 :]


@dataclass(frozen=True)
class GlobalHead:
    data: TrainingData  # the other users' ratings
    result: TrainingResult
    head: RatingHead  # as it serves
    linear: TrainedHead  # its linear prior
    prior: Prior


def global_head(
    plain: np.ndarray,
    pool: np.ndarray,
    preference: Tastes,
    others: int,
    rng: np.random.Generator,
    config: TrainingConfig,
) -> GlobalHead:
    """The global head: the other users' ratings of images from ``pool``
    (which the test sets never draw from), trained as user=all would be."""
    xs, ys, names = [], [], []
    for u in range(others):
        chosen = rng.choice(pool, OTHER_RATINGS, replace=False)
        xs.append(plain[chosen])
        ys.append(rate(preference.other(u)[chosen], rng))
        names += [f"e{i}" for i in chosen]
    data = TrainingData(np.concatenate(xs), np.concatenate(ys).astype(np.float32), names)
    result = train_head(data, config)
    assert result.head is not None
    linear = global_prior(data, result, config)
    assert linear is not None
    return GlobalHead(data, result, result.head.rating_head(), linear, Prior.of(linear.rating_head()))


@dataclass(frozen=True)
class Split:
    test: np.ndarray  # image indices
    train: np.ndarray
    y_train: np.ndarray  # float64
    y_test: np.ndarray
    data: TrainingData  # the training ratings as the trainer gets them

    @property
    def images(self) -> list[str]:
        return list(self.data.images)


def user_split(
    plain: np.ndarray, rest: np.ndarray, taste: np.ndarray, seed: int, uid: int, size: int, split: int
) -> Split:
    """One split of a test user: ``size`` training images and
    :data:`TEST_IMAGES` test images from ``rest``, rated by ``taste``."""
    local = np.random.default_rng([seed, uid, size, split])
    drawn = local.permutation(rest)
    test, train = drawn[:TEST_IMAGES], drawn[TEST_IMAGES : TEST_IMAGES + size]
    y_train = rate(taste[train], local).astype(np.float64)
    y_test = rate(taste[test], local)
    data = TrainingData(plain[train], y_train.astype(np.float32), [f"e{i}" for i in train])
    return Split(test, train, y_train, y_test, data)
