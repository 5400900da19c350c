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


def mean_colour_onnx(
    path: Path,
    weights: np.ndarray,
    bias: np.ndarray,
    size: int,
    *,
    divide_by: float = 255.0,
    layout: str = "NHWC",
    outputs: int | None = None,
) -> None:
    """A tiny ONNX tagger: sigmoid(mean colour / ``divide_by`` @ weights +
    bias), input NHWC ``[batch, size, size, 3]`` float (``layout="NCHW"``:
    ``[batch, 3, size, size]``, a wrong shape for a tagger). ``outputs``
    scores more than the weights give pad them with zero columns (a tag list
    that does not match)."""
    extra = (outputs or weights.shape[1]) - weights.shape[1]
    weights = np.pad(weights, ((0, 0), (0, extra)))
    bias = np.pad(bias, (0, extra))
    axes, shape = (
        ([1, 2], ["batch_size", size, size, 3]) if layout == "NHWC" else ([2, 3], ["batch_size", 3, size, size])
    )
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mean"], axes=axes, keepdims=0),
            helper.make_node("Div", ["mean", "scale"], ["unit"]),
            helper.make_node("MatMul", ["unit", "weights"], ["logits0"]),
            helper.make_node("Add", ["logits0", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["output"]),
        ],
        "tagger_test",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", weights.shape[1]])],
        initializer=[
            numpy_helper.from_array(np.array(divide_by, dtype=np.float32), "scale"),
            numpy_helper.from_array(weights.astype(np.float32), "weights"),
            numpy_helper.from_array(bias.astype(np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_wd_v3_dir(path: Path, size: int = 32, scale: float = 1.0, **graph: object) -> Path:
    """A WD v3 folder as distributed: model.onnx + selected_tags.csv, no
    manifest. ``scale`` multiplies the weights (a different model);
    ``graph`` goes to :func:`mean_colour_onnx` (a wrong layout or count)."""
    path.mkdir(parents=True, exist_ok=True)
    weights = np.array([w for _, _, w, _ in WD_TAGS], dtype=np.float32).T * scale  # (3, tags)
    bias = np.array([b for *_, b in WD_TAGS], dtype=np.float32)
    mean_colour_onnx(path / "model.onnx", weights, bias, size, **graph)  # type: ignore[arg-type]
    with open(path / "selected_tags.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category, _, _) in enumerate(WD_TAGS):
            writer.writerow([1000 + i, name, category, 5000 - i])
    return path


# DeepDanbooru style: (name, weights on the mean [R, G, B] in 0..1, bias);
# ratings are the "rating:" tags, characters listed in tags-character.txt.
DD_TAGS = [
    ("rating:safe", (2.0, 0.0, 0.0), -1.0),
    ("rating:questionable", (0.0, 0.0, 0.0), 0.0),
    ("rating:explicit", (0.0, 0.0, 0.0), -3.0),
    ("red_background", (4.0, 0.0, -4.0), 0.0),
    ("blue_background", (-4.0, 0.0, 4.0), 0.0),
    ("solo", (0.0, 0.0, 0.0), -0.2),  # 0.45: under the general 0.5
    ("hakurei_reimu", (3.0, 0.0, 0.0), 0.0),  # red: 0.95, a character
    ("kirisame_marisa", (1.0, 0.0, 0.0), 0.0),  # red: 0.73, under 0.85
]
DD_CHARACTERS = ("hakurei_reimu", "kirisame_marisa")


def write_deepdanbooru_dir(path: Path, size: int = 24) -> Path:
    """A DeepDanbooru-style folder: model.onnx (NHWC RGB 0-1) + tags.txt +
    tags-character.txt."""
    path.mkdir(parents=True, exist_ok=True)
    weights = np.array([w for _, w, _ in DD_TAGS], dtype=np.float32).T
    bias = np.array([b for *_, b in DD_TAGS], dtype=np.float32)
    # The loader feeds 0..1 already: the graph divides by 1.
    mean_colour_onnx(path / "model.onnx", weights, bias, size, divide_by=1.0)
    (path / "tags.txt").write_text("\n".join(name for name, _, _ in DD_TAGS) + "\n")
    (path / "tags-character.txt").write_text("\n".join(DD_CHARACTERS) + "\n")
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
