"""Active-vs-random learning curves for ``bench learning --active`` (issue 26):
held-out Spearman after 10, 20, ..., 100 ratings when the rated images are
chosen by each of :mod:`tagrate_common.ratenext`'s strategies (what /getratenext
serves among them) or at random.

Same users (every type of :class:`bench.learning.Tastes`), same splits: for
each user and split, 300 test images and a candidate pool (every other image
outside the global head's pool) are drawn once; each strategy then picks 10
images at a time from the pool, as the loop does in the product (the model is
retrained after every 10 ratings, TRAINER_RETRAIN_AFTER_RATINGS' default),
given the user's ratings so far. The model scored after each round is the
trainer's plain ridge candidate (``fit_candidate("ridge")``), the same for
every strategy, so only the choice of images differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from bench.harness import print_table
from tagrate_common import ratenext
from tagrate_trainer.selection.candidates import fit_candidate
from tagrate_trainer.training import TrainingConfig, TrainingData, spearman

STEP = 10
ROUNDS = 10  # 10, 20, ..., 100 ratings
TARGET_RATINGS = 60  # active must reach random's 100-rating figure by here
TOLERANCE = 0.01  # and never be below random by more
# Compared by default: what /getratenext serves, and the schedule measured against it and its second part.
STRATEGIES = (ratenext.RANDOM, ratenext.SERVED, ratenext.SCHEDULE, ratenext.VARIANCE)


def strategies(names: str) -> tuple[str, ...]:
    """``--strategies``' comma-separated names, random first (the reference)."""
    chosen = [name for name in names.split(",") if name and name != ratenext.RANDOM]
    if unknown := set(chosen) - set(ratenext.STRATEGIES):
        raise SystemExit(f"unknown strategies {sorted(unknown)}; known: {', '.join(ratenext.STRATEGIES)}")
    return (ratenext.RANDOM, *chosen)


BOUND_CANDIDATES, BOUND_RATED, BOUND_REPEATS = 2000, 200, 5  # dataset-service CANDIDATES, CLUSTERED_RATINGS


def bounds_time(plain: np.ndarray, strategy: str) -> list[str]:
    """Mean and max ms of a choice of 10 at the served bounds (images drawn
    from the emoji set, with replacement where it has fewer)."""
    rng = np.random.default_rng(26)
    seconds = []
    for r in range(BOUND_REPEATS):
        rows = rng.choice(len(plain), BOUND_CANDIDATES + BOUND_RATED, replace=len(plain) < 2200)
        candidates, rated = plain[rows[:BOUND_CANDIDATES]], plain[rows[BOUND_CANDIDATES:]]
        start = time.perf_counter()
        ratenext.choose(candidates, rated, rng.integers(0, 7, BOUND_RATED) / 6, STEP, strategy, seed=r)
        seconds.append(time.perf_counter() - start)
    return [f"{1000 * np.mean(seconds):.1f}", f"{1000 * np.max(seconds):.1f}"]


def curves(
    plain: np.ndarray,
    rest: np.ndarray,
    kinds: list[str],
    users: int,
    splits: int,
    seed: int,
    taste_of: Callable[[str, int], np.ndarray],
    uid_of: Callable[[str, int], int],
    rate: Callable[[np.ndarray, np.random.Generator], np.ndarray],
    test_images: int,
    strategies: tuple[str, ...] = STRATEGIES,
) -> int:
    """Prints the curves per type and the summary; returns 0 when the
    targets are met for the served strategy."""
    config = TrainingConfig()
    sizes = [STEP * (r + 1) for r in range(ROUNDS)]
    # (kind, strategy, size) -> [(user, Spearman)]
    scores: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
    seconds: dict[str, list[float]] = {}
    for kind in kinds:
        for k in range(users):
            taste = taste_of(kind, k)
            for split in range(splits):
                local = np.random.default_rng([seed, uid_of(kind, k), 4242, split])
                drawn = local.permutation(rest)
                test, pool = drawn[:test_images], drawn[test_images:]
                # Every image's rating drawn once, so both strategies see the same noise.
                truth = rate(taste, local)
                y_test = truth[test]
                for strategy in strategies:
                    rated: list[int] = []
                    for r in range(ROUNDS):
                        left = np.setdiff1d(pool, np.array(rated, dtype=int), assume_unique=False)
                        start = time.perf_counter()
                        choice = ratenext.choose(
                            plain[left],
                            plain[rated] if rated else np.empty((0, plain.shape[1]), np.float32),
                            truth[rated],
                            STEP,
                            strategy,
                            seed=r,
                        )
                        seconds.setdefault(strategy, []).append(time.perf_counter() - start)
                        rated += [int(left[i]) for i in choice.indices]
                        data = TrainingData(plain[rated], truth[rated].astype(np.float32), [f"e{i}" for i in rated])
                        head, _ = fit_candidate("ridge", data, config)
                        scores.setdefault((kind, strategy, len(rated)), []).append(
                            (k, spearman(head.predict(plain[test]), y_test))
                        )
            print(f"active: {kind} user {k + 1}/{users} done", flush=True)

    def mean(kind: str, strategy: str, size: int) -> float:
        return float(np.mean([v for _, v in scores[(kind, strategy, size)]]))

    unmet = []
    summary = []
    for kind in kinds:
        rows = []
        for size in sizes:
            rows.append([str(size), *(f"{mean(kind, s, size):.3f}" for s in strategies)])
        print_table(
            f"{kind}: held-out Spearman of the ridge head after N ratings chosen by each strategy "
            f"(mean of {users} users x {splits} splits)",
            ["ratings", *strategies],
            rows,
        )
        random_100 = mean(kind, ratenext.RANDOM, sizes[-1])
        for strategy in strategies:
            if strategy == ratenext.RANDOM:
                continue
            reach = next((size for size in sizes if mean(kind, strategy, size) >= random_100), None)
            worst = min(mean(kind, strategy, size) - mean(kind, ratenext.RANDOM, size) for size in sizes)
            summary.append([kind, strategy, f"{random_100:.3f}", str(reach or "> 100"), f"{worst:+.3f}"])
            if strategy == ratenext.SERVED and (reach is None or reach > TARGET_RATINGS or worst < -TOLERANCE):
                unmet.append(kind)
    print_table(
        "Active against random: ratings each strategy needs to reach random's 100-rating Spearman, and its "
        "least difference to random over 10-100 ratings",
        ["type", "strategy", "random @100", "ratings to reach it", "least (strategy - random)"],
        summary,
    )
    timing = [[s, f"{1000 * np.mean(v):.1f}", f"{1000 * np.max(v):.1f}"] for s, v in seconds.items()]
    print_table("Time to choose 10 images from the pool (ms)", ["strategy", "mean", "max"], timing)
    print_table(
        f"Time to choose 10 at /getratenext's bounds ({BOUND_CANDIDATES} candidates, {BOUND_RATED} rated; ms, "
        f"{BOUND_REPEATS} calls)",
        ["strategy", "mean", "max"],
        [[s, *bounds_time(plain, s)] for s in strategies if s != ratenext.RANDOM],
    )
    print(
        f"\ntarget (issue 26: {ratenext.SERVED}, what /getratenext serves, reaches random's 100-rating Spearman "
        f"with <= {TARGET_RATINGS} ratings and is never below random by more than {TOLERANCE}): "
        + ("met" if not unmet else "NOT met for " + ", ".join(unmet))
    )
    return 0 if not unmet else 1
