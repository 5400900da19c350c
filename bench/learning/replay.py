"""Replaying selection rules on recorded CV figures (issue 26):
``python -m bench learning --replay [--seed 18] [--users 4] [--splits 5]
[--sizes 20,50,100] [--record FILE]``.

The learning benchmark's draws (``python -m bench learning`` with the same
seed, users, splits and sizes: the same global head, users, splits and
ratings) are recorded once per case: every candidate's held-out Spearman,
and the cross-validation's figures, bootstrap draws and agreement with the
global taste. The record (a pickle, under ``bench/results/learning/`` by
default, git-ignored) is made on the first run and reused after; the
selection rule (:func:`tagrate_trainer.selection.rule.pick`, as it is in the
working tree) is then replayed on it in a moment, so a change of the rule's
constants is measured without refitting anything. The summary is the
benchmark's: selected against plain ridge per type and size, mean and worst
user, and issue 26's target. The replay gives the benchmark's figures to
the digit as long as the global head's own training is unchanged (the rule
also picks the global head: a change there changes the record, so
delete it).
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path

import numpy as np
import torch

from bench.harness import print_table
from tagrate_trainer.selection.candidates import (
    CANDIDATES,
    GLOBAL,
    MLP_CANDIDATE,
    MLP_MIN_RATINGS,
    NONE,
    PRIOR,
    fit_candidate,
)
from tagrate_trainer.selection.crossval import cross_validate
from tagrate_trainer.selection.rule import Spread, pick
from tagrate_trainer.training import Reporter, TrainingConfig, spearman

from . import draws
from .emoji import CACHE, features
from .tastes import TYPES, Tastes

Case = dict  # kind, user, size, held (choice -> Spearman), cv_s, cv_m, draws, agreement, n


def record(seed: int, users: int, splits: int, sizes: list[int], others: int = 24) -> list[Case]:
    """Every case's figures, drawn as :func:`bench.learning.main` draws them."""
    torch.set_num_threads(1)
    plain, _, categories, subcategories = features()
    n = len(plain)
    preference = Tastes(categories, subcategories, others, users, seed)
    rng = np.random.default_rng(seed)
    config = TrainingConfig()
    pool, rest = draws.pool_and_rest(rng, n)
    trained = draws.global_head(plain, pool, preference, others, rng, config)
    global_head, prior = trained.head, trained.prior
    reporter = Reporter(lambda _: None, lambda: False, config.max_epochs)
    cases: list[Case] = []
    started = time.perf_counter()
    for kind in TYPES:
        for k in range(users):
            taste = preference.user(kind, k)
            for size in sizes:
                for split in range(splits):
                    drawn = draws.user_split(plain, rest, taste, seed, preference.uid(kind, k), size, split)
                    test, train, y_train, y_test, data = (
                        drawn.test,
                        drawn.train,
                        drawn.y_train,
                        drawn.y_test,
                        drawn.data,
                    )
                    images = drawn.images
                    held = {GLOBAL: spearman(global_head.predict(plain[test]), y_test)}
                    for name in CANDIDATES:
                        if name == PRIOR or (name == MLP_CANDIDATE and size < MLP_MIN_RATINGS):
                            continue
                        head, _ = fit_candidate(name, data, config, prior, reporter, global_head)
                        held[name] = spearman(head.predict(plain[test]), y_test)
                    cv = cross_validate(
                        plain[train], y_train, images, config, reporter, prior, global_head.predict, global_head
                    )
                    assert cv.spread is not None
                    cases.append(
                        {
                            "kind": kind,
                            "user": k,
                            "size": size,
                            "held": held,
                            "cv_s": cv.spearman,
                            "cv_m": cv.mae,
                            "draws": cv.spread.draws,
                            "agreement": cv.agreement,
                            "n": len(y_train),
                        }
                    )
            print(f"{kind} user {k + 1}/{users} recorded ({time.perf_counter() - started:.0f}s)", flush=True)
    return cases


def replay(cases: list[Case], sizes: list[int]) -> int:
    """The selected - ridge summary of the rule in the working tree."""
    rows, unmet = [], []
    for kind in TYPES:
        for size in sizes:
            ours = [c for c in cases if c["kind"] == kind and c["size"] == size]
            ridge, selected, picks = [], [], {}
            for user in sorted({c["user"] for c in ours}):
                mine = [c for c in ours if c["user"] == user]
                ridge.append(np.mean([c["held"]["ridge"] for c in mine]))
                scores = []
                for c in mine:
                    choice = pick(c["cv_s"], c["cv_m"], c["n"], Spread(c["draws"]), c["agreement"])
                    picks[choice] = picks.get(choice, 0) + 1
                    scores.append(c["held"][GLOBAL if choice in (NONE, GLOBAL) else choice])
                selected.append(np.mean(scores))
            r, s = np.array(ridge), np.array(selected)
            mean, worst = s.mean() - r.mean(), s.min() - r.min()
            if size in (20, 50, 100) and min(mean, worst) < -0.005:
                unmet.append(f"{kind} {size}")
            rows.append(
                [
                    kind,
                    str(size),
                    f"{r.mean():.3f} / {r.min():.3f}",
                    f"{s.mean():.3f} / {s.min():.3f}",
                    f"{mean:+.3f}",
                    f"{worst:+.3f}",
                    f"{(s - r).min():+.3f}",
                    ", ".join(f"{p} {n}" for p, n in sorted(picks.items())),
                ]
            )
    print_table(
        "Replayed selection against plain ridge: Spearman mean / worst user, the differences, picks",
        ["type", "ratings", "ridge", "selected", "mean", "worst user", "least per user", "picks"],
        rows,
    )
    print(
        "\ntarget (issue 26: selected >= ridge - 0.005 for every type at 20, 50 and 100 ratings, mean and worst user): "
        + ("met" if not unmet else "NOT met at " + ", ".join(unmet))
    )
    return 0 if not unmet else 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench learning --replay")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--users", type=int, default=4, help="users per type")
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--sizes", default="20,50,100")
    parser.add_argument("--record", type=Path, default=None, help="the record (made when missing)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    path = args.record or CACHE / f"replay-{args.seed}-{args.users}x{args.splits}-{'-'.join(map(str, sizes))}.pkl"
    if path.exists():
        with path.open("rb") as f:
            cases = pickle.load(f)
    else:
        cases = record(args.seed, args.users, args.splits, sizes)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            pickle.dump(cases, f)
        print(f"recorded {len(cases)} cases in {path}", flush=True)
    return replay(cases, sizes)
