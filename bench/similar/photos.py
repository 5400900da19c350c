"""``--part photos``: precision and recall of duplicate detection on real
photos (scikit-image's samples) with the tests' variants (q30 re-encode,
half size, 5 % and 10 % crops, EXIF stripped, PNG) plus drawn look-alikes
that are distinct, through the service's candidate and confirmation code
with the real rater's features, pairwise over the groups found."""

from __future__ import annotations

import io
import itertools

import numpy as np

from tagrate_dataset.similar.duplicates import confirm, hash_candidate_pairs

from ..harness.measure import print_table
from .common import grouping_settings, loadavg

NAMES = [
    "astronaut", "chelsea", "coffee", "rocket", "camera", "coins", "moon", "immunohistochemistry", "page",
    "hubble_deep_field", "colorwheel", "logo", "text", "horse", "clock", "retina", "brick", "grass", "gravel",
]  # fmt: skip
TEXTURES = ("brick", "grass", "gravel")


def photos() -> None:
    from PIL import Image

    from tagrate_common.images import ImageLimits, inspect_image
    from tagrate_common.vision.loaders import load_default_model
    from tests.similar.photos import VARIANTS, original, variant
    from tests.trainer.scenes import scene

    files: list[tuple[str, bytes]] = []
    for name in NAMES:
        files.append((name, original(name)))
        files += [(name, variant(name, kind)) for kind in VARIANTS]
    files += [(f"circle{n}", scene(1.0, 500 + n, 160)) for n in range(8)]
    files += [(f"stripes{n}", scene(0.0, 600 + n, 160)) for n in range(8)]
    model = load_default_model("cpu")
    limits = ImageLimits(64 << 20, 100_000_000)
    hashes, thumbs, vectors = [], {}, {}
    for i, (_, data) in enumerate(files):
        info = inspect_image(data, "x", limits, perceptual=True)
        assert info.dhash is not None and info.thumb is not None
        hashes.append(info.dhash)
        thumbs[i] = info.thumb
        f = model.forward_features(model.preprocess(Image.open(io.BytesIO(data)).convert("RGB"))[None])[0]
        vectors[i] = (f / np.linalg.norm(f)).astype(np.float32)
    settings = grouping_settings()
    h = np.array(hashes, dtype=np.int64).view(np.uint64)
    candidates = {
        (int(a), int(b)) for a, b in hash_candidate_pairs(h, np.ones(len(files), dtype=bool), settings.hash_distance)
    }
    matrix = np.stack([vectors[i] for i in range(len(files))])
    scores = matrix @ matrix.T
    np.fill_diagonal(scores, -np.inf)
    for i in range(len(files)):
        for j in np.argsort(-scores[i])[:8]:
            if scores[i, j] >= settings.neighbour_similarity:
                candidates.add((min(i, int(j)), max(i, int(j))))
    confirmed = confirm(
        candidates, lambda ids: {i: vectors[i] for i in ids}, lambda ids: {i: thumbs[i] for i in ids}, settings
    )
    parent = list(range(len(files)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in confirmed:
        parent[root(a)] = root(b)
    rows = []
    for subset, label in (
        (lambda n: True, "all"),
        (lambda n: n not in TEXTURES, "without textures"),
    ):
        keep = [i for i, (name, _) in enumerate(files) if subset(name)]
        tp = fp = fn = 0
        for a, b in itertools.combinations(keep, 2):
            same, grouped = files[a][0] == files[b][0], root(a) == root(b)
            tp += same and grouped
            fp += grouped and not same
            fn += same and not grouped
        rows.append([label, len(keep), tp, fp, fn, tp / max(1, tp + fp), tp / max(1, tp + fn)])
    print_table(
        f"duplicate detection on real photographs ({len(NAMES)} photos x (original + {len(VARIANTS)} variants) "
        f"+ 16 look-alike scenes), pairwise; loadavg {loadavg()}",
        ["set", "images", "true pairs found", "false pairs", "missed pairs", "precision", "recall"],
        rows,
    )
