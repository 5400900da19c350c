"""The loaded-model runtime every format shares (:class:`ImageModel`):
``preprocess(PIL image) -> array`` for one image, ``predict(batch) -> scores``
for a stacked batch, per-label names, categories and default thresholds, the
device it runs on, padding of batches to the sizes it warmed up for, and
warm-up itself. Scores are probabilities in [0, 1], shape (batch, labels).

The torch-backed models (and their CPU streams) are in :mod:`.torch_models`;
the ONNX one, small, is here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from PIL import Image

from .manifest import Labels, Manifest, ModelDirError


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
        (see :class:`~.torch_models.CpuStreams`)."""
        return self._predict(self._padded(batch), alone)[: len(batch)]

    @property
    def features_id(self) -> str | None:
        """The id of the feature vectors this model gives from the forward
        pass that scores an image (:meth:`predict_with_features`), or None
        when it gives none. It is the rater's extractor id for the same
        model, so a tagger and a rater whose ids are equal run the same
        backbone, and the tagger's vectors can be cached as the rater's."""
        return None

    def predict_with_features(self, batch: np.ndarray, *, alone: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (as :meth:`predict`) and feature vectors (N, D) from
        one forward pass; only models with a :attr:`features_id`."""
        raise NotImplementedError(f"{self.model_id} gives no feature vectors")

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
        (see :class:`~.torch_models.CpuStreams`); other models ignore this."""
        return None

    def close(self) -> None:
        """Stops any threads the model started (see :meth:`use_cpu_streams`)."""
        return None

    def describe(self) -> str:
        return f"{self.model_id} ({self.manifest.format}, {self.manifest.architecture}, {self.label_count} labels)"


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
