"""Serving many heads at once: stacked heads give each head's own ratings,
and a head set rates every subject in one pass."""

from __future__ import annotations

import numpy as np

from tagrate_common.vision.rating_heads import serialize_weights
from tagrate_rater.heads import GLOBAL, HeadSet, StackedHeads
from tagrate_rater.store import HeadStore
from tests.common.test_rating_heads import D, head, linear_tensors, mlp_tensors, reference

EXTRACTOR = "test-extractor@0123456789ab:pooled"


def test_stacked_heads_equal_each_head_alone() -> None:
    rng = np.random.default_rng(2)
    specs = [("linear", linear_tensors(rng)) for _ in range(5)]
    specs += [("mlp", mlp_tensors(rng, 4)) for _ in range(3)] + [("mlp", mlp_tensors(rng, 9)) for _ in range(2)]
    order = rng.permutation(len(specs))  # interleave kinds and hidden sizes
    heads = [head(*specs[i]) for i in order]
    x = rng.normal(size=(6, D))
    stacked = StackedHeads(heads).predict(x)
    assert stacked.shape == (6, len(heads))
    for column, one in enumerate(heads):
        np.testing.assert_allclose(stacked[:, column], one.predict(x), atol=1e-6)
        np.testing.assert_allclose(stacked[:, column], reference(one.kind, one.tensors, x), atol=2e-6)


def test_a_head_set_rates_everyone_at_once(tmp_path) -> None:
    rng = np.random.default_rng(3)
    store = HeadStore.open(tmp_path / "heads", EXTRACTOR, D)
    for user in ("alice", "bob", GLOBAL):
        store.publish(user=user, kind="mlp", weights=serialize_weights(mlp_tensors(rng, 5)), extractor_id=EXTRACTOR)
    store.publish(user="carol", kind="linear", weights=serialize_weights(linear_tensors(rng)), extractor_id=EXTRACTOR)
    live: HeadSet = store.live
    x = rng.normal(size=(3, D))
    everything = live.predict_all(x)
    for user in ("alice", "bob", "carol", GLOBAL):
        np.testing.assert_allclose(everything[:, live.column(user)], live.get(user).head.predict(x), atol=1e-6)
