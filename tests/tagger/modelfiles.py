"""Small but real model directories built by the tests: a WD tagger v3
style ONNX model (NHWC, BGR, dynamic batch, sigmoid outputs) with a
``selected_tags.csv`` in the distributed column layout, and a TorchScript
model with a manifest. Their outputs are simple functions of the image's mean
colour, so tests can predict exactly which tags a coloured image earns."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

# (name, category, weights on the mean [B, G, R] in 0..1, bias). The channel
# order is BGR as in WD v3, so "red_theme" only scores high when the loader
# really feeds BGR.
WD_TAGS = [
    ("general", 9, (0.0, 0.0, 2.0), -1.0),
    ("sensitive", 9, (0.0, 0.0, 0.0), 0.0),
    ("questionable", 9, (0.0, 0.0, 0.0), -2.0),
    ("explicit", 9, (0.0, 0.0, 0.0), -3.0),
    ("red_theme", 0, (-4.0, 0.0, 4.0), 0.0),
    ("blue_theme", 0, (4.0, 0.0, -4.0), 0.0),
    ("1girl", 0, (0.0, 0.0, 0.0), -0.5),
    ("hatsune_miku", 4, (0.0, 0.0, 1.0), 0.0),
    ("kasane_teto", 4, (0.0, 0.0, 3.0), 0.0),
]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def expected_wd_scores(mean_bgr: tuple[float, float, float]) -> dict[str, float]:
    """What the test WD model outputs for an image of this mean colour (0..1)."""
    return {
        name: sigmoid(sum(w * c for w, c in zip(weights, mean_bgr, strict=True)) + bias)
        for name, _, weights, bias in WD_TAGS
    }


def write_wd_v3_dir(path: Path, size: int = 32, scale: float = 1.0) -> Path:
    """A WD v3 folder as distributed: model.onnx + selected_tags.csv, no
    manifest. ``scale`` multiplies the weights (a different model)."""
    path.mkdir(parents=True, exist_ok=True)
    weights = np.array([w for _, _, w, _ in WD_TAGS], dtype=np.float32).T * scale  # (3, tags)
    bias = np.array([b for *_, b in WD_TAGS], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2], keepdims=0),
            helper.make_node("Div", ["mean", "scale255"], ["unit"]),
            helper.make_node("MatMul", ["unit", "weights"], ["logits0"]),
            helper.make_node("Add", ["logits0", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ],
        "wd_v3_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", len(WD_TAGS)])],
        initializer=[
            numpy_helper.from_array(np.array(255.0, dtype=np.float32), "scale255"),
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(bias, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path / "model.onnx")
    with open(path / "selected_tags.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, _, _) in enumerate(WD_TAGS):
            writer.writerow([1000 + i, name, category, 5000 - i])
    return path


class MeanColourClassifier(torch.nn.Module):
    """logits = mean RGB (normalised input) @ weight + bias."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([[4.0, -4.0, 0.0], [0.0, 4.0, -4.0], [-4.0, 0.0, 4.0]]).T)
        self.bias = torch.nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3)) @ self.weight + self.bias


TORCHSCRIPT_LABELS = ["reddish", "greenish", "bluish"]


def write_torchscript_dir(path: Path, size: int = 16) -> Path:
    """model.pt (scripted), labels.txt and manifest.json; input is RGB in 0..1."""
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but is what users bring
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(MeanColourClassifier()).save(str(path / "model.pt"))
    (path / "labels.txt").write_text("\n".join(TORCHSCRIPT_LABELS) + "\n")
    manifest = {
        "name": "mean-colour",
        "format": "torchscript",
        "architecture": "mean-colour-linear",
        "weights": "model.pt",
        "labels": "labels.txt",
        "input_size": size,
        "resize": "shorter_side_crop",
        "resize_size": size,
        "mean": [0, 0, 0],
        "std": [255, 255, 255],
        "activation": "sigmoid",
        "thresholds": {"default": 0.6},
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path
