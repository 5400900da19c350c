"""tagrate_common.ratenext's typical-then-variance schedule (measured in
``bench learning --active``, not served): typical-clusters under SWITCH_AT
ratings, then variance-reduction, which asks first about the group of
near-identical images the model knows least, goes round every group once per
call before any twice, and follows new ratings. Also the two hybrids
measured for issue 26: typical-informative (not served) and
typical-and-variance, which /getratenext serves
(tests/dataset/tasteloop/test_service.py, tests/gateway/test_tasteloop_e2e.py)."""

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


def informative(vectors: np.ndarray, rated: list[int], limit: int) -> tuple[ratenext.Choice, np.ndarray]:
    left = np.setdiff1d(np.arange(len(vectors)), rated)
    ratings = np.linspace(0.0, 1.0, len(rated))
    choice = ratenext.choose(vectors[left], vectors[rated], ratings, limit, ratenext.INFORMATIVE, seed=3)
    return choice, left[choice.indices]


def test_typical_informative_spreads_then_asks_where_the_model_knows_least() -> None:
    vectors, group = library()
    # Cold start: one typical image of every group.
    choice, picked = informative(vectors, [], CLUSTERS)
    assert choice.strategy == ratenext.INFORMATIVE and all(choice.reasons)
    assert sorted(group[picked].tolist()) == list(range(CLUSTERS))

    # INFORMED_FROM ratings over groups 0-3, none in group 4: the model weighs
    # the groups, and the group nothing was rated in comes first.
    counts = [0] * CLUSTERS
    for n in range(ratenext.INFORMED_FROM):
        counts[n % (CLUSTERS - 1)] += 1
    rated = [int(i) for c in range(CLUSTERS) for i in np.flatnonzero(group == c)[: counts[c]]]
    choice, picked = informative(vectors, rated, 10)
    assert all("unsure" in reason for reason in choice.reasons)
    assert len(set(picked.tolist())) == 10 and not set(picked.tolist()) & set(rated)
    assert group[picked[0]] == CLUSTERS - 1, group[picked].tolist()
    assert len(set(group[picked].tolist())) >= 4, group[picked].tolist()  # not one group over and over

    # After new ratings (the first three picks), a new queue without them.
    _, repicked = informative(vectors, rated + picked[:3].tolist(), 10)
    assert repicked.tolist() != picked.tolist() and not set(repicked.tolist()) & set(rated + picked[:3].tolist())

    # Fewer unrated images than asked for: each once.
    everything_but_three = [i for i in range(len(vectors)) if i not in picked[:3]]
    _, last = informative(vectors, everything_but_three, 10)
    assert sorted(last.tolist()) == sorted(picked[:3].tolist())


def test_typical_and_variance_takes_half_its_picks_from_each() -> None:
    vectors, group = library()
    left = np.setdiff1d(np.arange(len(vectors)), [0, 8])
    few = ratenext.choose(vectors[left], vectors[[0, 8]], np.array([0.0, 1.0]), 4, ratenext.ALTERNATE, seed=3)
    assert few.strategy == ratenext.ALTERNATE  # under SWITCH_AT ratings: typical-clusters alone
    assert few.indices == ratenext.typical_clusters(vectors[left], vectors[[0, 8]], 4, 3)

    counts = [0] * CLUSTERS
    for n in range(ratenext.SWITCH_AT):
        counts[n % (CLUSTERS - 1)] += 1
    rated = [int(i) for c in range(CLUSTERS) for i in np.flatnonzero(group == c)[: counts[c]]]
    left = np.setdiff1d(np.arange(len(vectors)), rated)
    ratings = np.linspace(0.0, 1.0, len(rated))
    choice = ratenext.choose(vectors[left], vectors[rated], ratings, 9, ratenext.ALTERNATE, seed=3)
    picked = left[choice.indices]
    assert choice.strategy == ratenext.ALTERNATE
    assert len(set(picked.tolist())) == 9 and not set(picked.tolist()) & set(rated)
    typical = ratenext.typical_clusters(vectors[left], vectors[rated], 5, 3)
    assert choice.indices[:5] == typical  # the first half (rounded up): typical-clusters'
    assert choice.reasons[:5] == ["typical of a large group of images unlike anything rated"] * 5
    assert all("least sure" in reason for reason in choice.reasons[5:])  # the rest: variance reduction's
