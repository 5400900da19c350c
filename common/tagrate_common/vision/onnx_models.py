"""EfficientNet-Lite0 on ONNX Runtime: the faster CPU backend.

The folded torch module (:func:`~.efficientnet_lite.fold_for_inference`) is
exported once with ``torch.onnx.export`` (the TorchScript-based exporter,
``dynamo=False``: it needs nothing but torch and ``onnx``, no network) into a
cache folder, as one graph with two outputs, the class logits and the pooled
1280-d features, so the tagger gets both from one pass. ``onnx-int8`` then
quantizes that graph statically (QDQ, per-channel int8 weights, uint8
activations) with a calibration set cut from scikit-image's sample
photographs, real photos that ship inside the package, keeping the
layers that int8 cannot represent closely enough in float (:func:`_quantize`).

A cached file is named after a digest of what it is made from (the weights'
sha256, the label count, the backend, the exporter's version and this
module's recipe version), so new weights or a new recipe give a new file and
a stale one is never picked up; files are written under a temporary name and
renamed, so services exporting at once (the tagger and the rater share the
data folder) never read a half-written one.

Backends (``TAGGER_BACKEND`` / ``RATER_BACKEND``):

* ``torch``: the traced torch module (:class:`~.torch_models.EfficientNetLiteModel`);
* ``onnx-fp32``: the same numbers (features within 1e-4, same top-5 labels),
  so it keeps the model id: tags and cached vectors stay valid;
* ``onnx-int8`` (what ``auto`` picks on a CPU): close but not equal (see
  :data:`AUTO_CPU_BACKEND` for how close), so it is another model: its id is the content id of the manifest
  renamed ``<name>-int8``, and its vectors are cached and its heads trained
  apart from the fp32 ones.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .manifest import Labels, Manifest
from .models import ImageModel

log = logging.getLogger(__name__)

Backend = Literal["auto", "torch", "onnx-fp32", "onnx-int8"]
OnnxBackend = Literal["onnx-fp32", "onnx-int8"]
# What ``auto`` picks on a CPU: the fastest backend that passes the agreement
# tests (tests/tagger/test_onnx_backend.py). int8 in the mixed precision of
# :func:`_quantize` meets every bar (top-1 kept on 100 of 104 held-out photo
# views, feature cosine >= 0.9965, personal-model Spearman 0.945 against
# torch's 0.944) and its raw ceiling is 1.3x onnx-fp32's (bench backends,
# batch 1 and best batch alike). It is a model of its own: switching to it
# re-tags and re-embeds, and personal models trained on fp32 vectors need
# retraining; TAGGER_BACKEND / RATER_BACKEND=onnx-fp32 keeps the fp32 model.
# On a GPU ``auto`` stays on torch: the CPU-only onnxruntime package has no
# CUDA. Those figures hold on CPUs with 8-bit dot-product instructions (VNNI:
# AVX-512 VNNI, AVX-VNNI, AMX). Without them onnxruntime's u8s8 kernels
# saturate their 16-bit sums: on an AVX2-only AMD EPYC the same int8 model
# kept the top-1 label on 86% of those views (92% quantized with
# reduce_range, min cosine 0.984), short of the bars, so ``auto`` takes
# onnx-fp32 there (:func:`int8_runs_well_here`).
AUTO_CPU_BACKEND: OnnxBackend = "onnx-int8"
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# Bumped whenever the export or quantization recipe changes.
RECIPE_VERSION = "2"
OPSET = 17
# The int8 model keeps the stem and the first FLOAT_BLOCKS of its 16 MBConv
# blocks in float (see _quantize).
FLOAT_BLOCKS = 9
CALIBRATION_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "camera",
    "hubble_deep_field",
    "retina",
    "brick",
    "grass",
)
CALIBRATION_CROPS = 6  # random views per photo: 54 calibration images


@functools.cache
def int8_runs_well_here(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has the 8-bit dot-product instructions the int8
    model's agreement figures were measured with (see AUTO_CPU_BACKEND);
    False where the flags cannot be read."""
    try:
        flags = {flag for line in cpuinfo.read_text().splitlines() if line.startswith("flags") for flag in line.split()}
    except OSError:
        return False
    return bool(flags & INT8_DOT_PRODUCT_FLAGS)


def resolve_backend(backend: Backend, device: str) -> Literal["torch", "onnx-fp32", "onnx-int8"]:
    """``auto``: :data:`AUTO_CPU_BACKEND` on a CPU with VNNI, onnx-fp32 on
    other CPUs, torch on a GPU."""
    if backend == "auto":
        if device != "cpu":
            return "torch"
        return AUTO_CPU_BACKEND if int8_runs_well_here() else "onnx-fp32"
    return backend


def int8_manifest(manifest: Manifest) -> Manifest:
    """The manifest an int8 model is identified by: its name ends in
    ``-int8``, so its content id differs from the fp32 model's."""
    return manifest.model_copy(update={"name": f"{manifest.name}-int8"})


def cached_onnx(
    module: Any, weights_sha256: str, label_count: int, backend: OnnxBackend, cache_dir: Path, input_size: int
) -> Path:
    """The ONNX file for ``module`` (a folded EfficientNet-Lite0) in
    ``backend``'s precision: from ``cache_dir`` when it is there, else
    exported (and quantized) now and cached."""
    import torch

    key = hashlib.sha256(
        f"{weights_sha256}\0{label_count}\0{backend}\0{input_size}\0{torch.__version__}\0{OPSET}\0{RECIPE_VERSION}".encode()
    ).hexdigest()[:16]
    path = cache_dir / f"efficientnet-lite0-{backend}-{key}.onnx"
    if path.is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info(
        "exporting the model to ONNX for %s%s (first start only: cached in %s)",
        backend,
        " and quantizing it to int8" if backend == "onnx-int8" else "",
        cache_dir,
    )
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".export-") as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        _export(module, fp32, input_size)
        made = fp32
        if backend == "onnx-int8":
            made = Path(scratch) / "int8.onnx"
            _quantize(fp32, made, Path(scratch), input_size)
        os.replace(made, path)
    log.info("exported the model for %s: %s", backend, path)
    return path


def _export(module: Any, path: Path, input_size: int) -> None:
    import torch

    class Outputs(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            features = self.model.forward_features(x)
            return self.model.classify(features), features

    example = torch.zeros(1, 3, input_size, input_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes: padding sizes become constants (inputs are square)
        torch.onnx.export(
            Outputs(module.float().to("cpu", memory_format=torch.contiguous_format)).eval(),
            (example,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits", "features"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
        )


# Real photos (in scikit-image too) the calibration set never sees, for
# the agreement tests.
HELD_OUT_PHOTOS = ("immunohistochemistry", "gravel", "motorcycle_left", "motorcycle_right")


def _sample_photo(name: str) -> np.ndarray:
    """A scikit-image sample photograph as 8-bit RGB (H, W, 3)."""
    import skimage.data

    if name.startswith("motorcycle_"):  # one photo of a stereo pair
        pixels = skimage.data.stereo_motorcycle()[0 if name == "motorcycle_left" else 1]
    else:
        pixels = getattr(skimage.data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def calibration_images(
    input_size: int,
    count_per_photo: int = CALIBRATION_CROPS,
    seed: int = 0,
    photos: tuple[str, ...] = CALIBRATION_PHOTOS,
) -> Iterator[np.ndarray]:
    """Preprocessed EfficientNet-Lite inputs (1, 3, size, size): random
    crops (40-100% of the shorter side), flips and the centre view of
    scikit-image's sample photographs (``photos``: :data:`CALIBRATION_PHOTOS`
    or :data:`HELD_OUT_PHOTOS` names)."""
    from PIL import Image

    from .preprocess import EFFICIENTNET_LITE

    rng = np.random.default_rng(seed)
    for name in photos:
        photo = Image.fromarray(_sample_photo(name))
        for i in range(count_per_photo):
            view = photo
            if i:
                side = int(min(photo.size) * rng.uniform(0.4, 1.0))
                left = int(rng.integers(0, photo.width - side + 1))
                top = int(rng.integers(0, photo.height - side + 1))
                view = photo.crop((left, top, left + side, top + side))
                if rng.random() < 0.5:
                    view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            yield EFFICIENTNET_LITE(view)[None]


def float_nodes(graph: Any) -> list[str]:
    """The nodes :func:`_quantize` leaves in float: the stem, the first
    :data:`FLOAT_BLOCKS` MBConv blocks, and the pooling and classifier after
    the head (names as ``torch.onnx.export`` gives them: ``/stem/...``,
    ``/blocks.<i>/...``, ``/GlobalAveragePool``, ``/fc/...``)."""
    prefixes = ("/stem/", *(f"/blocks.{i}/" for i in range(FLOAT_BLOCKS)), "/GlobalAveragePool", "/Flatten", "/fc/")
    names = [node.name for node in graph.node if node.name.startswith(prefixes)]
    found = {prefix for prefix in prefixes for name in names if name.startswith(prefix)}
    missing = [prefix for prefix in prefixes if prefix not in found and prefix != "/Flatten"]
    if missing:  # an exporter that names nodes otherwise: quantizing everything would pass silently
        raise RuntimeError(f"the exported graph has no nodes named {', '.join(missing)}*; update float_nodes")
    return names


def _quantize(fp32: Path, out: Path, scratch: Path, input_size: int) -> None:
    """Static int8 quantization of the exported graph, in mixed precision.

    Quantizing every layer (per-channel weights, per-tensor activations, the
    TFLite recipe) keeps the fp32 top-1 label on only 87-92% of held-out
    photo crops (mean feature cosine 0.984, min 0.88-0.91). The error starts
    at the stem and block 0: per-tensor uint8 steps of their activations are
    coarse for the many channels with small ranges, which block 0's
    depthwise convolution (BatchNorm-folded, large per-channel gains)
    amplifies; quantizing the stem alone costs 0.09 of cosine. Leaving the
    stem and the first blocks in float removes that (blocks 0-8: min cosine
    0.997, top-1 97-100%), and the pooling and classifier in float keep the
    logits of near-ties from flipping. Excluding a convolution means
    excluding its Clip too: a lone Clip gets its input quantized at the
    convolution's unclipped range, which is what made earlier exclusion
    attempts worse. Calibration method (MinMax, percentile, entropy), a 3x
    larger calibration set and symmetric int8 activations changed nothing
    or made it worse. The float blocks are the large feature maps, where
    int8 kernels gain least, so the mixed model still runs ~1.3x faster
    than fp32 (see AUTO_CPU_BACKEND)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.images = calibration_images(input_size)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self.images, None)
            return None if image is None else {"input": image}

    prepared = scratch / "prepared.onnx"
    with _root_info_hidden():
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=float_nodes(onnx.load(str(prepared)).graph),
        )


@contextlib.contextmanager
def _root_info_hidden() -> Iterator[None]:
    """onnxruntime's quantizer logs through the root logger itself
    (``logging.info``: an "Increased scale[i] for weight ..." line for most
    layers, some 60 per model), which is the service's own log, and its
    progress notes on ``onnxruntime.*``: while it runs, records below
    WARNING logged on the root logger directly or on onnxruntime's are
    dropped. The services log through their own named loggers, unaffected."""
    root, onnxruntime = logging.getLogger(), logging.getLogger("onnxruntime")
    level = onnxruntime.level

    def warnings_and_above(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    root.addFilter(warnings_and_above)
    onnxruntime.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeFilter(warnings_and_above)
        onnxruntime.setLevel(level)


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Like GOMP_SPINCOUNT for torch (see the package's __init__): idle
    # intra-op threads would otherwise spin through the gaps between
    # requests, taking cores from decoding and the other services.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxEfficientNetModel(ImageModel):
    """EfficientNet-Lite0 exported to ONNX (fp32 or int8), on the CPU.

    CPU streams, as for torch (:class:`~.torch_models.CpuStreams`): a batch
    of several images runs as one-image ``session.run`` calls side by side
    on ``streams`` pool threads, on a session with one intra-op thread
    (onnxruntime then runs the graph on the calling thread, and concurrent
    runs of one session are safe); a lone image runs on a session with
    ``threads`` intra-op threads when nothing else waits for the CPU, on the
    one-thread session otherwise. With 1 stream a batch is one run over all
    threads.
    """

    def __init__(
        self, manifest: Manifest, labels: Labels, model_id: str, path: Path, backend: OnnxBackend, threads: int
    ) -> None:
        super().__init__(manifest, labels, model_id, "cpu")
        self.path = path
        self.backend = backend
        self.threads = threads
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self.streams = 1
        self.use_cpu_streams(0, threads)

    @property
    def features_id(self) -> str | None:
        return f"{self.model_id}:pooled"

    def _session_for(self, threads: int) -> Any:
        with self._lock:
            if threads not in self._sessions:
                self._sessions[threads] = _session(self.path, threads)
            return self._sessions[threads]

    def use_cpu_streams(self, streams: int, threads: int = 0) -> None:
        """Like the torch models' (see the class docstring)."""
        threads = threads or self.threads
        streams = streams or threads
        if self._pool is not None and (self.streams, self.threads) == (streams, threads):
            return
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.threads, self.streams = threads, streams
        if streams > 1:
            self._pool = ThreadPoolExecutor(streams, thread_name_prefix="onnx-stream")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _run(self, batch: np.ndarray, alone: bool) -> tuple[np.ndarray, np.ndarray]:
        """(logits, features) for a contiguous float32 batch."""
        if self._pool is None or len(batch) == 1:
            threads = self.threads if (alone or self._pool is None) else 1
            logits, features = self._session_for(threads).run(None, {"input": batch})
            return logits, features
        single = self._session_for(1)
        runs: Callable[[np.ndarray], list[np.ndarray]] = lambda image: single.run(None, {"input": image})  # noqa: E731
        parts = list(self._pool.map(runs, np.split(batch, len(batch))))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _activate(self, logits: np.ndarray) -> np.ndarray:
        logits = logits.astype(np.float32, copy=False)
        if self.manifest.activation == "softmax":
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        if self.manifest.activation == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        return logits

    def _predict(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        return self._activate(self._run(batch, alone)[0])

    def forward_features(self, batch: np.ndarray, *, alone: bool = True) -> np.ndarray:
        """Pooled 1280-d features, float32 (N, 1280) (see :meth:`predict`)."""
        return np.asarray(self._run(self._padded(batch), alone)[1], dtype=np.float32)[: len(batch)]

    def predict_with_features(self, batch: np.ndarray, *, alone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities and pooled features from one forward pass."""
        logits, features = self._run(self._padded(batch), alone)
        return self._activate(logits)[: len(batch)], np.asarray(features, dtype=np.float32)[: len(batch)]

    def describe(self) -> str:
        return f"{super().describe()} on onnxruntime ({self.backend})"
