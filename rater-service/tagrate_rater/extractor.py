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

Like the tagger, a call checks every file's size and header first (cheap),
then decodes and preprocesses each image in the calling thread and submits it
to a :class:`DynamicBatcher` at once, so images from concurrent calls share
forward passes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np

from tagrate_common.batcher import DynamicBatcher
from tagrate_common.errors import InvalidArgument, PayloadTooLarge
from tagrate_common.images import ImageLimits, check_header, decode_image, naming_file
from tagrate_common.vision.modeldir import (
    EfficientNetLiteModel,
    ImageModel,
    ModelDirError,
    TorchScriptModel,
    load_default_model,
    load_model_dir,
    set_torch_threads,
)

from .config import RaterSettings

log = logging.getLogger(__name__)

ImageFiles = Sequence[tuple[bytes, str]]  # (data, client file name) per image


def extractor_id(model: ImageModel) -> str:
    """``<model id>:<output>``: the model's content id plus which of its
    outputs the vectors are (``pooled`` for EfficientNet-Lite0's pooled
    features, ``output`` for a TorchScript model's own output)."""
    return f"{model.model_id}:{'pooled' if isinstance(model, EfficientNetLiteModel) else 'output'}"


def load_feature_model(settings: RaterSettings) -> ImageModel:
    """Loads (but does not warm up) the configured extractor model. Raises
    ``ModelDirError`` saying what is wrong, including for a model directory
    that cannot produce feature vectors (a WD tagger's ONNX file gives tag
    scores only)."""
    set_torch_threads(settings.torch_threads)
    if settings.model_dir is None:
        model: ImageModel = load_default_model(settings.device)
    else:
        model = load_model_dir(settings.model_dir, settings.device, settings.torch_threads)
    if not isinstance(model, EfficientNetLiteModel | TorchScriptModel):
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

    def __init__(
        self,
        model: ImageModel,
        *,
        limits: ImageLimits,
        max_bulk_files: int,
        batching: bool = True,
        max_batch_size: int = 8,
        max_queue_delay_ms: float = 5.0,
        max_queue_size: int = 512,
    ) -> None:
        self.model = model
        self.extractor_id = extractor_id(model)
        self.limits = limits
        self.max_bulk_files = max_bulk_files
        self.dimensions = 0  # set by the warm-up
        self._warm_up_sizes = model.warm_up_sizes(max_batch_size if batching else 1)
        self.batcher: DynamicBatcher[np.ndarray, np.ndarray] = DynamicBatcher(
            self.features_batch,
            max_batch_size=max_batch_size,
            max_queue_delay_ms=max_queue_delay_ms,
            max_queue_size=max_queue_size,
            enabled=batching,
            name="rater",
            initializer=self._warm_up,
        )

    @classmethod
    def from_settings(cls, model: ImageModel, settings: RaterSettings) -> FeatureExtractor:
        return cls(
            model,
            limits=settings.image_limits,
            max_bulk_files=settings.max_bulk_files,
            batching=settings.batching,
            max_batch_size=settings.batch_size_for(model.device),
            max_queue_delay_ms=settings.queue_delay_ms_for(model.device),
            max_queue_size=settings.max_queue_size,
        )

    def features_batch(self, images: list[np.ndarray]) -> np.ndarray:
        """One forward pass over preprocessed images: float32 (N, dimensions)."""
        batch = np.stack(images)
        if isinstance(self.model, EfficientNetLiteModel):
            features = self.model.forward_features(batch)
        else:
            features = self.model.predict(batch)  # TorchScript: the output is the vector
        return np.ascontiguousarray(features.reshape(len(images), -1), dtype=np.float32)

    def _warm_up(self) -> None:
        """Runs the model at every batch size it will see, on the thread that
        will run it, and checks every size gives vectors of one length."""
        start = time.perf_counter()
        sizes = set()
        for size in self._warm_up_sizes:
            zeros = np.zeros((size, *self.model.input_shape), dtype=np.float32)
            features = self.features_batch(list(zeros))
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
            ",".join(map(str, self._warm_up_sizes)),
            time.perf_counter() - start,
        )

    def check_files(self, files: ImageFiles) -> None:
        """The cheap checks, before any decoding or user lookup: at least one
        file, not too many, each within the size limit with a supported
        image header. Errors name the file by position and name."""
        if not files:
            raise InvalidArgument("no images were sent; upload at least one image file", "missing_parameter")
        if len(files) > self.max_bulk_files:
            raise PayloadTooLarge(
                f"{len(files)} files were sent; at most {self.max_bulk_files} are allowed per request",
                "too_many_files",
            )
        for index, (data, filename) in enumerate(files, start=1):
            with naming_file(index, filename):
                check_header(data, filename, self.limits)

    def features(self, files: ImageFiles, timeout: float | None = None) -> np.ndarray:
        """Feature vectors, float32 (len(files), dimensions), in order. Any
        file that does not decode fails the whole call, naming it."""
        self.check_files(files)
        futures: list[Future[np.ndarray]] = []
        try:
            for index, (data, filename) in enumerate(files, start=1):
                with naming_file(index, filename):
                    image = decode_image(data, filename, self.limits)
                futures.append(self.batcher.submit(self.model.preprocess(image)))
            rows = self.batcher.wait(futures, timeout)
        finally:
            for future in futures:  # a later file failed: drop the queued ones
                future.cancel()
        return np.stack(rows)

    def close(self) -> None:
        """Finishes queued work and stops the batcher's worker."""
        self.batcher.close()
