"""``python -m bench backends [--seconds S] [--rounds R]``: the raw forward-pass
ceiling of the default EfficientNet-Lite0 per backend (torch eager, torch
traced, onnxruntime fp32 and int8), images/s at batch 1 and at the best of
batches 2-8, all threads. Backends run in interleaved rounds, so a machine
shared with other work slows them alike; the table gives each round's median
and the ratios to traced torch and to onnx-fp32 (batch 1, and best batch
against fp32's best batch)."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _rate(run: Callable[[np.ndarray], object], batch: np.ndarray, seconds: float) -> float:
    run(batch)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch)
        done += len(batch)
    return done / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench backends")
    parser.add_argument("--seconds", type=float, default=2.0, help="per backend, batch size and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    from tagrate_common.vision.loaders import load_default_model, set_torch_threads
    from tagrate_common.vision.onnx_models import calibration_images

    set_torch_threads(0)
    cache = Path(tempfile.mkdtemp(prefix="tagrate-bench-models-"))
    traced = load_default_model("cpu")
    models = {
        "torch eager": traced,
        "torch traced": traced,
        "onnx-fp32": load_default_model("cpu", "onnx-fp32", cache),
        "onnx-int8": load_default_model("cpu", "onnx-int8", cache),
    }
    photos = np.concatenate(list(calibration_images(224, 1, seed=7)))

    def runner(name: str) -> Callable[[np.ndarray], object]:
        model = models[name]
        if name == "torch eager":

            def eager(batch: np.ndarray) -> object:
                with torch.inference_mode():
                    return model.module(model._input(batch))  # type: ignore[union-attr]

            return eager
        return lambda batch: model.predict(batch)

    sizes = (1, 2, 4, 8)
    rates: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for size in sizes:
            batch = np.resize(photos, (size, *photos.shape[1:])).astype(np.float32)
            for name in models:
                rates.setdefault((name, size), []).append(_rate(runner(name), batch, args.seconds))
    median = {key: statistics.median(values) for key, values in rates.items()}
    base = median[("torch traced", 1)]
    print(f"raw ceiling, images/s (median of {args.rounds} interleaved rounds, {torch.get_num_threads()} threads)")
    fp32 = {size: median[("onnx-fp32", size)] for size in sizes}
    print("| backend | batch 1 | best batch | vs traced torch, batch 1 | vs onnx-fp32, batch 1 / best batch |")
    print("| --- | --- | --- | --- | --- |")
    for name in models:
        best = max(sizes[1:], key=lambda size: median[(name, size)])
        print(
            f"| {name} | {median[(name, 1)]:.1f} | {median[(name, best)]:.1f} (batch {best}) "
            f"| {median[(name, 1)] / base:.2f}x "
            f"| {median[(name, 1)] / fp32[1]:.2f}x / {median[(name, best)] / max(fp32.values()):.2f}x |"
        )
    return 0
