"""ONNX tagger folders as people download them: a WD tagger v3
(``model.onnx`` + ``selected_tags.csv``) or a DeepDanbooru-style model
(``model.onnx`` + ``tags.txt``, optionally ``tags-character.txt``), with an
optional ``thresholds.json`` of per-category thresholds. No manifest is
needed: the input size is read from the ONNX graph, and everything is
checked before the model serves, each problem with a sentence saying what is
wrong (a missing file, an input that is not NHWC ``[batch, size, size, 3]``
float, an output whose size is not the tag list's length).

* WD v3: NHWC, BGR, float 0-255, sigmoid outputs; ``selected_tags.csv``
  columns tag_id,name,category,count (category 9 rating, 0 general,
  4 character). Thresholds general 0.35, character 0.85, one rating (top-1).
* DeepDanbooru: NHWC, RGB, float 0-1, sigmoid outputs; ``tags.txt`` one tag
  a line, ``rating:*`` tags are ratings (top-1), tags also listed in
  ``tags-character.txt`` are characters. Thresholds general 0.5, character
  0.85.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .manifest import RATING_PREFIX, Labels, Manifest, ModelDirError, content_id, read_labels
from .models import WdV3OnnxModel

MODEL_FILE = "model.onnx"
WD_TAGS_FILE = "selected_tags.csv"
DD_TAGS_FILE = "tags.txt"
DD_CHARACTER_FILE = "tags-character.txt"
THRESHOLDS_FILE = "thresholds.json"

# The reference WD v3 thresholds: characters need far more confidence than
# general tags; exactly one rating (the most likely) is always reported.
WD_V3_THRESHOLDS = {"general": 0.35, "character": 0.85, "rating": 0.0}
DEEPDANBOORU_THRESHOLDS = {"general": 0.5, "character": 0.85, "rating": 0.0}


@dataclass(frozen=True)
class TaggerKind:
    """One family of ONNX taggers: how its folder looks and how it is fed."""

    title: str
    format: str
    architecture: str
    labels: str
    channel_order: str
    std: float  # 0-255 pixels are divided by this
    pixels: str  # how the input is described in errors
    thresholds: dict[str, float]


WD_V3 = TaggerKind(
    "WD tagger v3", "onnx-wd-v3", "wd-tagger-v3", WD_TAGS_FILE, "BGR", 1.0, "BGR float 0-255", WD_V3_THRESHOLDS
)
DEEPDANBOORU = TaggerKind(
    "DeepDanbooru",
    "onnx-deepdanbooru",
    "deepdanbooru",
    DD_TAGS_FILE,
    "RGB",
    255.0,
    "RGB float 0-1",
    DEEPDANBOORU_THRESHOLDS,
)
KINDS = {kind.format: kind for kind in (WD_V3, DEEPDANBOORU)}


def detect_kind(model_dir: Path) -> TaggerKind | None:
    """The kind of ONNX tagger folder ``model_dir`` is, or None when it holds
    no ``model.onnx`` with a tag list."""
    if not (model_dir / MODEL_FILE).is_file():
        return None
    for kind in (WD_V3, DEEPDANBOORU):
        if (model_dir / kind.labels).is_file():
            return kind
    return None


def missing_files_message(model_dir: Path) -> str:
    """What an ONNX tagger folder lacks, in a sentence."""
    if not (model_dir / MODEL_FILE).is_file():
        return f"{model_dir} has no {MODEL_FILE}"
    return f"{model_dir} has {MODEL_FILE} but no tag list ({WD_TAGS_FILE} for WD v3, {DD_TAGS_FILE} for DeepDanbooru)"


def read_thresholds(model_dir: Path, defaults: dict[str, float]) -> dict[str, float]:
    """``defaults`` updated by the folder's ``thresholds.json`` (a JSON object
    of category -> number in [0, 1]), if it has one."""
    path = model_dir / THRESHOLDS_FILE
    if not path.is_file():
        return dict(defaults)
    try:
        given = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(given, dict):
        raise ModelDirError(f'{path} must be a JSON object like {{"general": 0.35, "character": 0.85}}')
    for category, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise ModelDirError(f"{path}: the threshold for {category!r} must be a number within [0, 1], got {value!r}")
    return {**defaults, **{str(k): float(v) for k, v in given.items()}}


def read_deepdanbooru_labels(path: Path) -> Labels:
    """``tags.txt``: ``rating:*`` tags are ratings, the ones also in
    ``tags-character.txt`` (next to it, optional) characters, the rest general."""
    plain = read_labels(path)
    characters_file = path.with_name(DD_CHARACTER_FILE)
    characters = set()
    if characters_file.is_file():
        characters = {line.strip() for line in characters_file.read_text(encoding="utf-8").splitlines()}
    categories = tuple(
        "rating" if name.startswith(RATING_PREFIX) else "character" if name in characters else "general"
        for name in plain.names
    )
    return Labels(plain.names, categories)


def _manifest_name(model_dir: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "-", model_dir.resolve().name).strip("-.")[:100]
    return name or "onnx-tagger"


def _derived_manifest(model_dir: Path, kind: TaggerKind, size: int) -> Manifest:
    """The manifest of a folder as distributed."""
    return Manifest(
        name=_manifest_name(model_dir),
        format=kind.format,  # type: ignore[arg-type]
        architecture=kind.architecture,
        weights=MODEL_FILE,
        labels=kind.labels,
        input_size=size,
        resize="pad_square",
        std=(kind.std, kind.std, kind.std),
        channel_order=kind.channel_order,  # type: ignore[arg-type]
        layout="NHWC",
        activation="none",  # the graph ends in a sigmoid
        thresholds=read_thresholds(model_dir, kind.thresholds),
        exclusive_categories=("rating",),
    )


def _session(weights: Path, device: str, threads: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:  # optional: only ONNX taggers need it
        raise ModelDirError("ONNX tagger models need onnxruntime; run `make venv`") from None
    if not weights.is_file():
        raise ModelDirError(f"{weights} is missing")
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        return ort.InferenceSession(str(weights), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelDirError(f"{weights} could not be loaded by onnxruntime: {exc}") from None


def check_input(weights: Path, kind: TaggerKind, session: Any) -> int:
    """The square input size of the graph, or ModelDirError saying why its
    input is not the NHWC ``[batch, size, size, 3]`` float a tagger takes."""
    inputs = session.get_inputs()
    expected = f"a {kind.title} model takes one NHWC input [batch, size, size, 3] ({kind.pixels})"
    if len(inputs) != 1:
        raise ModelDirError(f"{weights} has {len(inputs)} inputs; {expected}")
    shape, dtype = inputs[0].shape, inputs[0].type
    square = len(shape) == 4 and isinstance(shape[1], int) and shape[1] == shape[2] and shape[1] > 0
    if not square or shape[3] != 3:
        hint = " (this looks like NCHW, channels first)" if len(shape) == 4 and shape[1] == 3 else ""
        raise ModelDirError(f"{weights} takes input shape {list(shape)}{hint}; {expected}")
    if dtype != "tensor(float)":
        raise ModelDirError(f"{weights} takes {dtype} input; {expected}")
    return int(shape[1])


def check_outputs(weights: Path, labels_path: Path, labels: Labels, session: Any) -> None:
    """ModelDirError when the graph's score count is known and is not the
    tag list's length (a symbolic one is checked by the warm-up's pass)."""
    outputs = session.get_outputs()
    shape = outputs[0].shape if outputs else []
    count = shape[-1] if len(shape) == 2 else None
    if isinstance(count, int) and count != len(labels):
        raise ModelDirError(
            f"{weights.name} gives {count} scores per image but {labels_path.name} lists {len(labels)} tags; "
            "the tag list must be the one that came with the model"
        )


def load_onnx_tagger(model_dir: Path, manifest: Manifest | None, device: str, threads: int) -> WdV3OnnxModel:
    """Loads and checks an ONNX tagger folder (``manifest`` None: as
    distributed, see :func:`detect_kind`)."""
    kind = KINDS[manifest.format] if manifest is not None else detect_kind(model_dir)
    if kind is None:
        raise ModelDirError(missing_files_message(model_dir))
    weights = model_dir / (manifest.weights if manifest else MODEL_FILE)
    labels_path = model_dir / (manifest.labels if manifest else kind.labels)
    if not labels_path.is_file():
        raise ModelDirError(f"{labels_path} is missing")
    session = _session(weights, device, threads)
    size = check_input(weights, kind, session)
    if manifest is None:
        manifest = _derived_manifest(model_dir, kind, size)
    elif manifest.input_size != size:
        raise ModelDirError(f"{model_dir}: manifest input_size {manifest.input_size} but the model takes {size}")
    files = [weights, labels_path]
    if kind is DEEPDANBOORU and labels_path.suffix.lower() != ".csv":
        labels = read_deepdanbooru_labels(labels_path)
        if labels_path.with_name(DD_CHARACTER_FILE).is_file():
            files.append(labels_path.with_name(DD_CHARACTER_FILE))
    else:
        labels = read_labels(labels_path)
    check_outputs(weights, labels_path, labels, session)
    model_id = content_id(manifest, files)
    # Where it really runs: the CPU-only onnxruntime package ignores CUDA.
    runs_on = device if "CUDAExecutionProvider" in session.get_providers() else "cpu"
    return WdV3OnnxModel(manifest, labels, model_id, runs_on, session)
