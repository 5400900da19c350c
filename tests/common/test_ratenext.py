"""tagrate_common.ratenext's typical-then-variance schedule (measured in
``bench learning --active``, not served: /getratenext serves
typical-clusters, tests/dataset/tasteloop/test_service.py): typical-clusters
under SWITCH_AT ratings, then variance-reduction, which asks first about the
group of near-identical images the model knows least, goes round every group
once per call before any twice, and follows new ratings."""

from __future__ import annotations

import numpy as np

from tagrate_common import ratenext

CLUSTERS, PER_CLUSTER, DIMS = 5, 8, 32


def library() -> tuple[np.ndarray, np.ndarray]:
    """40 vectors in 5 groups of near-identical ones (the groups far apart), and each one's group."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(CLUSTERS, DIMS)) * 3
    vectors = np.concatenate([centres[c] + rng.normal(size=(PER_CLUSTER, DIMS)) * 0.05 for c in range(CLUSTERS)])
    return vectors.astype(np.float32), np.repeat(np.arange(CLUSTERS), PER_CLUSTER)


def choose(vectors: np.ndarray, rated: list[int], limit: int) -> tuple[ratenext.Choice, np.ndarray]:
    left = np.setdiff1d(np.arange(len(vectors)), rated)
    ratings = np.linspace(0.0, 1.0, len(rated))
    choice = ratenext.choose(vectors[left], vectors[rated], ratings, limit, ratenext.SCHEDULE, seed=3)
    return choice, left[choice.indices]


def test_the_schedule_turns_from_typical_clusters_to_variance_reduction() -> None:
    vectors, group = library()
    few = [int(i) for c in range(2) for i in np.flatnonzero(group == c)[:3]]
    choice, picked = choose(vectors, few, CLUSTERS)
    assert choice.strategy == ratenext.TYPICAL and all(choice.reasons)
    assert {2, 3, 4} <= set(group[picked].tolist())

    # SWITCH_AT ratings over groups 0-3, none in group 4.
    counts = [0] * CLUSTERS
    for n in range(ratenext.SWITCH_AT):
        counts[n % (CLUSTERS - 1)] += 1
    assert max(counts) < PER_CLUSTER  # every group keeps a candidate
    rated = [int(i) for c in range(CLUSTERS) for i in np.flatnonzero(group == c)[: counts[c]]]
    choice, picked = choose(vectors, rated, 10)
    assert choice.strategy == ratenext.VARIANCE and all(choice.reasons)
    assert len(set(picked.tolist())) == 10 and not set(picked.tolist()) & set(rated)
    groups = group[picked].tolist()
    assert groups[0] == CLUSTERS - 1, groups  # the group nothing was rated in first
    assert sorted(groups[:CLUSTERS]) == list(range(CLUSTERS)), groups  # every group once
    assert sorted(groups[CLUSTERS:]) == list(range(CLUSTERS)), groups  # then once again

    # After new ratings (the first three picks), a new queue without them.
    again, repicked = choose(vectors, rated + picked[:3].tolist(), 10)
    assert again.strategy == ratenext.VARIANCE
    assert repicked.tolist() != picked.tolist() and not set(repicked.tolist()) & set(rated + picked[:3].tolist())
