"""Candidate feature parts for taught tags (issue 25), per emoji, cached:
pooled activations of EfficientNet-Lite0's later stages and of its head map
(the package's ImageNet weights, the inference-folded module, float32 on the
CPU), and colour/shape statistics of the flattened image, each for the image
and its mirror (test-time flip averaging).

Stages (0-based block index, channels, map at 224 px): stage 4 ends at block
7 (80, 14x14), stage 5 at 10 (112, 14x14), stage 6 at 14 (192, 7x7), stage 7
at 15 (320, 7x7); the head is 1280 x 7x7 after ReLU6 (its global average is
the served 1280-d vector). A block's output is the linear bottleneck (it may
be negative): averaged (``avg``), and GeM-pooled (p = 3) and max-pooled after
clamping at 0. The head map is also pooled as a 2x2 grid (``head-grid``,
5120-d) and GeM (``head-gem``).

Colour/shape (``colour``, 159-d) from the image the store keeps (alpha
composited on white), at 64 px: a HSV histogram 8x4x4 of the non-white
pixels (square-rooted, so a linear classifier sees a Hellinger-like
distance; 128), a 3x3 grid of mean RGB of the whole image (27), the
non-white share, the edge density (gradient magnitude above 32), and the
bounding box's fill and log aspect of the non-white pixels (4).
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .emoji import CACHE, EMBED_BATCH, fetch

PARTS_CACHE = CACHE / "taught-parts.npz"
STAGE_ENDS = {"s4": 7, "s5": 10, "s6": 14, "s7": 15}
GEM_P = 3.0


def flattened(png: bytes) -> Image.Image:
    """The image as the image store keeps it: alpha composited on white."""
    rgba = Image.open(io.BytesIO(png)).convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    canvas.alpha_composite(rgba)
    return canvas.convert("RGB")


def _gem(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=1e-6).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)


def network_parts(module: torch.nn.Module, batch: torch.Tensor) -> dict[str, np.ndarray]:
    """Pooled activations of one preprocessed batch through the folded model."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        x = module.stem(batch)
        for i, block in enumerate(module.blocks):
            x = block(x)
            for name, end in STAGE_ENDS.items():
                if i == end:
                    out[f"{name}-avg"] = x.mean(dim=(2, 3))
                    out[f"{name}-gem"] = _gem(x)
                    out[f"{name}-max"] = x.clamp(min=0).amax(dim=(2, 3))
        head = module.head(x)
        out["head"] = head.mean(dim=(2, 3))
        out["head-gem"] = _gem(head)
        out["head-grid"] = torch.flatten(F.adaptive_avg_pool2d(head, 2), 1)
    return {k: v.numpy().astype(np.float32) for k, v in out.items()}


def colour_parts(image: Image.Image) -> np.ndarray:
    """The colour/shape statistics (see the module doc) of one flattened image."""
    small = image.resize((64, 64), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float32)
    hsv = np.asarray(small.convert("HSV"), dtype=np.int32)
    ink = rgb.min(axis=2) < 235  # not (near) white background
    h, s, v = hsv[..., 0][ink] * 8 // 256, hsv[..., 1][ink] * 4 // 256, hsv[..., 2][ink] * 4 // 256
    hist = np.bincount((h * 16 + s * 4 + v).ravel(), minlength=128).astype(np.float32)
    hist = np.sqrt(hist / max(1.0, hist.sum()))
    grid = np.concatenate([cell.mean(axis=(0, 1)) / 255.0 for row in np.array_split(rgb, 3, 0)
                           for cell in np.array_split(row, 3, 1)])  # fmt: skip
    grey = rgb.mean(axis=2)
    gy, gx = np.gradient(grey)
    edges = float(np.mean(np.hypot(gx, gy) > 32.0))
    if ink.any():
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
        fill, aspect = float(ink.sum()) / (height * width), width / height
    else:
        fill, aspect = 0.0, 1.0
    shape = np.array([ink.mean(), edges, fill, np.log(aspect)], dtype=np.float32)
    return np.concatenate([hist, grid.astype(np.float32), shape])


def parts() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[str], dict[str, float]]:
    """Every part for every emoji and its mirror, the categories, and the
    extraction's ms per image (``network``: one forward pass with the pooled
    parts; ``served``: the served forward_features for the same batches;
    ``colour``): cached in :data:`PARTS_CACHE`."""
    if PARTS_CACHE.exists():
        data = np.load(PARTS_CACHE)
        plain = {k[6:]: data[k] for k in data.files if k.startswith("plain:")}
        flipped = {k[8:]: data[k] for k in data.files if k.startswith("flipped:")}
        ms = {k[3:]: float(data[k]) for k in data.files if k.startswith("ms:")}
        return plain, flipped, list(data["category"]), ms
    from tagrate_common.vision.efficientnet_lite import fold_for_inference, load_efficientnet_lite0
    from tagrate_common.vision.preprocess import EFFICIENTNET_LITE

    torch.set_num_threads(1)
    module = fold_for_inference(load_efficientnet_lite0())
    records, pngs = fetch()
    collected: dict[str, dict[str, list[np.ndarray]]] = {"plain": {}, "flipped": {}}
    seconds = {"network": 0.0, "served": 0.0, "colour": 0.0}
    for begin in range(0, len(records), EMBED_BATCH):
        images = [flattened(pngs[r["image"]]) for r in records[begin : begin + EMBED_BATCH]]
        for view, batch_images in (("plain", images), ("flipped", [i.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                                                                   for i in images])):  # fmt: skip
            batch = torch.from_numpy(np.stack([EFFICIENTNET_LITE(i) for i in batch_images]))
            start = time.perf_counter()
            got = network_parts(module, batch)
            seconds["network"] += time.perf_counter() - start
            if view == "plain":
                start = time.perf_counter()
                with torch.no_grad():
                    served = module.forward_features(batch).numpy()
                seconds["served"] += time.perf_counter() - start
                assert np.allclose(served, got["head"], atol=1e-4), "the head part is not the served vector"
            start = time.perf_counter()
            got["colour"] = np.stack([colour_parts(i) for i in batch_images])
            seconds["colour"] += time.perf_counter() - start
            for name, values in got.items():
                collected[view].setdefault(name, []).append(values)
        print(f"  {begin + len(images)} of {len(records)} emoji", flush=True)
    n = len(records)
    plain = {k: np.concatenate(v) for k, v in collected["plain"].items()}
    flipped = {k: np.concatenate(v) for k, v in collected["flipped"].items()}
    ms = {
        "network": 1000 * seconds["network"] / (2 * n),
        "served": 1000 * seconds["served"] / n,
        "colour": 1000 * seconds["colour"] / (2 * n),
    }
    categories = [r["category"] for r in records]
    np.savez(
        PARTS_CACHE,
        category=categories,
        **{f"plain:{k}": v for k, v in plain.items()},
        **{f"flipped:{k}": v for k, v in flipped.items()},
        **{f"ms:{k}": np.float64(v) for k, v in ms.items()},
    )
    return plain, flipped, categories, ms
