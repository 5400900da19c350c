"""Images in, feature vectors out: the rater's backbone, free of gRPC.

The feature extractor is a model directory like the tagger's. The embedded
default is EfficientNet-Lite0 with the same weights and preprocessing as the
default tagger, but the rater uses its pooled 1280-d vector (the input of the
classifier) rather than the class scores. A TorchScript model directory
works too: its output is taken as the feature vector.

The extractor id names exactly which vectors these are: the model's content
id (weights, manifest, labels) plus the output used. The dataset service
caches vectors under it and every rating head records it, so a head trained
on one extractor's features is never applied to another's.

Like the tagger, a call runs its files through the shared
:class:`~tagrate_common.vision.pipeline.ImagePipeline`: header checks first,
decoding and preprocessing on the calling thread, forward passes shared with
concurrent calls by one dynamic batcher.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from tagrate_common.batcher import DynamicBatcher
from tagrate_common.vision.loaders import load_service_model
from tagrate_common.vision.manifest import ModelDirError
from tagrate_common.vision.models import ImageModel
from tagrate_common.vision.onnx_models import OnnxEfficientNetModel
from tagrate_common.vision.pipeline import ImageFiles, ImagePipeline, PipelineOptions
from tagrate_common.vision.torch_models import EfficientNetLiteModel, TorchScriptModel

from .config import RaterSettings

log = logging.getLogger(__name__)


def extractor_id(model: ImageModel) -> str:
    """``<model id>:<output>``: the model's content id plus which of its
    outputs the vectors are (``pooled`` for EfficientNet-Lite0's pooled
    features, ``output`` for a TorchScript model's own output). For a model
    with pooled features this is its ``features_id``, the id a tagger running
    the same model reports: the dataset service then takes the vectors from
    the tagger's pass instead of running the backbone again."""
    return model.features_id or f"{model.model_id}:output"


def load_feature_model(settings: RaterSettings) -> ImageModel:
    """Loads (but does not warm up) the configured extractor model. Raises
    ``ModelDirError`` saying what is wrong, including for a model directory
    that cannot produce feature vectors (a WD tagger's ONNX file gives tag
    scores only)."""
    model = load_service_model(settings, settings.model_dir, settings.backend)
    if not isinstance(model, EfficientNetLiteModel | OnnxEfficientNetModel | TorchScriptModel):
        raise ModelDirError(
            f"{settings.model_dir} is a {model.manifest.format} model, which gives tag scores, not feature "
            "vectors; use an efficientnet-lite0 torch-state-dict or a TorchScript model directory"
        )
    log.info("loaded feature extractor %s on %s", extractor_id(model), model.device)
    return model


class FeatureExtractor:
    """Turns uploaded images into feature vectors through one dynamic
    batcher. The model is warmed up on the batcher's thread, and its vector
    size learnt, before the constructor returns."""

    def __init__(self, model: ImageModel, options: PipelineOptions) -> None:
        self.model = model
        self.extractor_id = extractor_id(model)
        self.dimensions = 0  # set by the warm-up
        self.pipeline = ImagePipeline(model, self._vectors, options, name="rater", warm_up=self._warm_up)

    @classmethod
    def from_settings(cls, model: ImageModel, settings: RaterSettings) -> FeatureExtractor:
        return cls(model, PipelineOptions.from_settings(settings, model.device))

    @property
    def batcher(self) -> DynamicBatcher[np.ndarray, np.ndarray]:
        return self.pipeline.batcher

    def _vectors(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        """One forward pass over a stacked batch: float32 (N, dimensions)."""
        if isinstance(self.model, EfficientNetLiteModel | OnnxEfficientNetModel):
            features = self.model.forward_features(batch, alone=alone)
        else:
            features = self.model.predict(batch, alone=alone)  # TorchScript: the output is the vector
        return np.ascontiguousarray(features.reshape(len(batch), -1), dtype=np.float32)

    def _warm_up(self, batch_sizes: tuple[int, ...]) -> None:
        """Runs the model at every batch size it will see, on the thread that
        will run it, and checks every size gives vectors of one length."""
        start = time.perf_counter()
        sizes = set()
        for size in batch_sizes:
            features = self._vectors(np.zeros((size, *self.model.input_shape), dtype=np.float32), True)
            sizes.add(features.shape)
            if features.shape[0] != size or not np.isfinite(features).all():
                raise ModelDirError(f"{self.extractor_id} gave {features.shape} features for {size} image(s)")
        dimensions = {shape[1] for shape in sizes}
        if len(dimensions) != 1:
            raise ModelDirError(f"{self.extractor_id} gives vectors of different lengths: {sorted(dimensions)}")
        self.dimensions = dimensions.pop()
        log.info(
            "feature extractor %s warmed up on %s (%d-d, batch sizes %s) in %.1fs",
            self.extractor_id,
            self.model.device,
            self.dimensions,
            ",".join(map(str, batch_sizes)),
            time.perf_counter() - start,
        )

    def check_files(self, files: ImageFiles) -> None:
        """The cheap checks, before any decoding or user lookup: at least one
        file, not too many, each within the size limit with a supported
        image header. Errors name the file by position and name."""
        self.pipeline.check_files(files)

    def features(self, files: ImageFiles, timeout: float | None = None) -> np.ndarray:
        """Feature vectors, float32 (len(files), dimensions), in order. Any
        file that does not decode fails the whole call, naming it."""
        return np.stack(self.pipeline.run(files, timeout))

    def close(self) -> None:
        """Finishes queued work and stops the batcher's worker."""
        self.pipeline.close()
