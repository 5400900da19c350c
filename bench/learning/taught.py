"""Taught-tag quality on Twemoji: ``python -m bench learning --taught
[--sizes 5,10,20] [--splits N] [--others N]``.

Each Twemoji category (Smileys & Emotion, Animals & Nature, Food & Drink,
...) is a "manual" tag a person put on ``k`` images (5, 10, 20); the other
images are the library. The trainer's learner (``tagrate_trainer.taught``,
exactly as the service runs it: its positives, a seeded sample of the other
images as the unlabelled others, its cross-validated threshold for the
target precision) is scored on the held-out images, i.e. every image but
the examples, against the true categories:

- AP: average precision of the classifier's scores over the held-out
  images (threshold-free: does it rank the category first?);
- precision: of the tags it applies (held-out images at or above its
  threshold), the share that are right, and how many it applies (recall).

With ``--timing`` it instead times the learner as the trainer runs it for
one tag of a 100k-image library: synthetic vectors (clustered, 1280-d), 20
positives and the sample of others (``--others``, the trainer's
``TRAINER_TAUGHT_TAG_OTHERS``; the learner sees only the sample, so its
cost does not grow with the library), and the dataset service's scoring of
every vector with the published weights.

Features: the default model's vectors of every emoji (``emoji.features``,
cached). Targets (issue 25): mean AP >= 0.8 at 20 examples; precision of
the applied tags >= 0.8 at every size.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np

from bench.harness import print_table
from tagrate_trainer.taught import learn

from .emoji import ATTRIBUTION, CACHE, EMBED_BATCH, fetch

TAUGHT_CACHE = CACHE / "taught-features.npz"


def plain_features() -> tuple[np.ndarray, list[str]]:
    """Every emoji's feature vector and category: the learning benchmark's
    cache when it is there, else computed here without the mirror images
    that benchmark also needs (half the work), cached apart."""
    if (CACHE / "features.npz").exists():
        data = np.load(CACHE / "features.npz")
        return data["plain"], list(data["category"])
    if TAUGHT_CACHE.exists():
        data = np.load(TAUGHT_CACHE)
        return data["plain"], list(data["category"])
    import io

    from PIL import Image

    from tagrate_common.vision.loaders import load_default_model

    records, pngs = fetch()
    model = load_default_model("cpu")
    plain = []
    for begin in range(0, len(records), EMBED_BATCH):
        images = []
        for record in records[begin : begin + EMBED_BATCH]:
            rgba = Image.open(io.BytesIO(pngs[record["image"]])).convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # as the image store flattens alpha
            canvas.alpha_composite(rgba)
            images.append(canvas.convert("RGB"))
        plain.append(model.forward_features(np.stack([model.preprocess(i) for i in images])))
        print(f"  {begin + len(images)} of {len(records)} emoji", flush=True)
    vectors = np.concatenate(plain).astype(np.float32)
    categories = [r["category"] for r in records]
    np.savez(TAUGHT_CACHE, plain=vectors, category=categories)
    return vectors, categories


TARGET_AP, TARGET_PRECISION = 0.8, 0.8


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = truth[order].astype(float)
    if not hits.sum():
        return float("nan")
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision_at * hits).sum() / hits.sum())


def timing(others: int, library: int = 100_000, dim: int = 1280, runs: int = 3) -> None:
    """Seconds and peak memory of one tag's learning (see the module doc)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, dim))

    def synthetic(n: int) -> np.ndarray:  # non-negative, clustered, like pooled activations
        return np.abs(centres[rng.integers(0, 50, n)] + rng.normal(size=(n, dim))).astype(np.float32)

    positives = synthetic(20)
    rows = []
    for sample in sorted({others, 1000, 5000}):
        seconds = []
        for run in range(runs):
            drawn = synthetic(sample)
            tracemalloc.start()
            start = time.perf_counter()
            model = learn(positives, positives[:0], drawn, library - 20, seed=run)
            seconds.append(time.perf_counter() - start)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        scoring = 0.0
        for _ in range(0, library, 1000):  # as the dataset service publishes: chunks of vectors
            chunk = synthetic(1000)
            start = time.perf_counter()
            model.scores(chunk)
            scoring += time.perf_counter() - start
        rows.append([sample, f"{np.median(seconds):.2f}", f"{max(seconds):.2f}", f"{peak / 2**20:.0f}",
                     f"{scoring:.2f}"])  # fmt: skip
    print_table(
        f"Learning one taught tag of a {library:,}-image library (synthetic {dim}-d vectors, 20 positives)",
        ["others sampled", "learn s (median)", "learn s (max)", "learn peak MiB", f"scoring {library:,} s"],
        rows,
    )
    print(f"1-minute load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


@dataclass(frozen=True)
class Scored:
    """One category at one size, over its draws."""

    category: str
    images: int
    examples: int
    ap: float  # mean over the draws
    correct: int  # applied tags that are right, summed over the draws
    applied: int
    recall: float  # mean over the draws


def evaluate(
    vectors: np.ndarray, categories: list[str], sizes: list[int], splits: int, others: int, precision: float, seed: int
) -> list[Scored]:
    """The learner on every category and size (see the module doc). The
    draws depend on ``seed`` and the categories only, never on ``vectors``:
    two feature sets scored with one seed see the same examples and samples."""
    labels = np.array(categories)
    rng = np.random.default_rng(seed)
    scored = []
    for name in sorted(set(categories)):
        truth = labels == name
        members = np.flatnonzero(truth)
        for k in sizes:
            aps, correct, applied, recall = [], 0, 0, []
            for split in range(splits):
                examples = rng.choice(members, size=k, replace=False)
                rest = np.setdiff1d(np.arange(len(vectors)), examples)
                sample = rng.choice(rest, size=min(others, len(rest)), replace=False)
                model = learn(vectors[examples], vectors[:0], vectors[sample], len(rest), precision, seed=split)
                scores = model.scores(vectors[rest])
                aps.append(average_precision(scores, truth[rest]))
                passing = scores >= model.threshold
                correct += int((passing & truth[rest]).sum())
                applied += int(passing.sum())
                recall.append(float((passing & truth[rest]).sum()) / max(1, int(truth[rest].sum())))
            scored.append(Scored(name, len(members), k, float(np.mean(aps)), correct, applied, float(np.mean(recall))))
    return scored


@dataclass(frozen=True)
class Summary:
    examples: int
    mean_ap: float
    precision: float  # pooled over the categories' applied tags
    worst: float  # the worst category's precision (of those applying any)
    applied: int  # summed over the categories, summed over the draws


def summarise(scored: list[Scored], k: int) -> Summary:
    at = [s for s in scored if s.examples == k]
    correct, applied = sum(s.correct for s in at), sum(s.applied for s in at)
    return Summary(
        k,
        float(np.mean([s.ap for s in at])),
        correct / applied if applied else float("nan"),
        min((s.correct / s.applied for s in at if s.applied), default=float("nan")),
        applied,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench learning --taught")
    parser.add_argument("--sizes", default="5,10,20")
    parser.add_argument("--splits", type=int, default=5, help="draws of the examples per category and size")
    parser.add_argument("--others", type=int, default=1000, help="other images sampled (TRAINER_TAUGHT_TAG_OTHERS)")
    parser.add_argument("--precision", type=float, default=0.9, help="TRAINER_TAUGHT_TAG_PRECISION")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--timing", action="store_true", help="instead: one tag's learning time at 100k images")
    args = parser.parse_args(argv)
    if args.timing:
        timing(args.others)
        return 0
    print(ATTRIBUTION, flush=True)
    plain, categories = plain_features()
    sizes = [int(s) for s in args.sizes.split(",")]
    started = time.perf_counter()
    scored = evaluate(plain, categories, sizes, args.splits, args.others, args.precision, args.seed)
    rows = [
        [s.category, s.images, s.examples, f"{s.ap:.3f}",
         f"{s.correct / s.applied:.3f}" if s.applied else "nan", s.applied // args.splits, f"{s.recall:.3f}"]
        for s in scored
    ]  # fmt: skip
    print_table(
        f"Taught tags on Twemoji ({len(plain)} images, {len(set(categories))} categories, {args.splits} draws each)",
        ["category (the tag)", "images", "examples", "AP", "precision", "applied/draw", "recall"],
        rows,
    )
    summary, ok = [], True
    for k in sizes:
        got = summarise(scored, k)
        if (k >= 20 and got.mean_ap < TARGET_AP) or not got.precision >= TARGET_PRECISION:
            ok = False
        summary.append(
            [k, f"{got.mean_ap:.3f}", f"{got.precision:.3f}", f"{got.worst:.3f}", got.applied // args.splits]
        )
    print_table(
        f"Summary (targets: mean AP >= {TARGET_AP} at 20 examples, applied-tag precision >= {TARGET_PRECISION})",
        ["examples", "mean AP", "precision (pooled)", "worst category", "tags applied/draw"],
        summary,
    )
    load = os.getloadavg()[0]
    print(f"{time.perf_counter() - started:.0f} s; 1-minute load average {load:.1f} on {os.cpu_count()} cores")
    return 0 if ok else 1
