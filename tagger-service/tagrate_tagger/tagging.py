"""Images in, tags out: the tagger's domain logic, free of gRPC.

A call validates its parameters, then runs its files through the shared
:class:`~tagrate_common.vision.pipeline.ImagePipeline` (header checks first,
decoding and preprocessing on the calling thread, forward passes shared with
concurrent calls by one dynamic batcher) and turns each image's scores into
tags.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from tagrate_common.batcher import DynamicBatcher
from tagrate_common.errors import InvalidArgument
from tagrate_common.vision.models import ImageModel
from tagrate_common.vision.pipeline import ImageFiles, ImagePipeline, PipelineOptions

from .config import TaggerSettings

log = logging.getLogger(__name__)

TagList = list[tuple[str, float]]


class Tagger:
    """Tags images with one loaded model through one
    :class:`~tagrate_common.vision.pipeline.ImagePipeline`. The model is
    warmed up (and checked) before the constructor returns."""

    def __init__(
        self,
        model: ImageModel,
        options: PipelineOptions,
        *,
        threshold: float | None = None,
        category_thresholds: dict[str, float] | None = None,
    ) -> None:
        self.model = model
        self.default_thresholds = (
            np.full(model.label_count, threshold, np.float32) if threshold is not None else model.default_thresholds
        )
        if threshold is None and category_thresholds:
            # Settings over the model's own, for the categories they name.
            self.default_thresholds = np.array(
                [
                    category_thresholds.get(category, float(own))
                    for category, own in zip(model.labels.categories, self.default_thresholds, strict=True)
                ],
                dtype=np.float32,
            )
        self.default_threshold = threshold if threshold is not None else model.manifest.default_threshold
        # A model whose labels all share one category (the ImageNet one) has
        # no categories to report.
        categorised = len(set(model.labels.categories)) > 1
        self._categories = dict(zip(model.labels.names, model.labels.categories, strict=True)) if categorised else {}
        # Thresholds that differ by category, or one rating of several: only
        # the model's own selection (no threshold in the request) is right.
        self.per_category = threshold is None and (
            len(set(self.default_thresholds.tolist())) > 1 or any(g.size for g in model.exclusive_groups)
        )
        # A model with features always returns them from its pass (free:
        # they are the classifier's input), as the columns after the scores.
        self.features_id = model.features_id
        self.pipeline = ImagePipeline(
            model,
            self._scores_and_features if self.features_id else lambda batch, alone: model.predict(batch, alone=alone),
            options,
            name="tagger",
            warm_up=self._warm_up,
        )

    @classmethod
    def from_settings(cls, model: ImageModel, settings: TaggerSettings) -> Tagger:
        return cls(
            model,
            PipelineOptions.from_settings(settings, model.device),
            threshold=settings.threshold,
            category_thresholds=settings.category_thresholds,
        )

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def category(self, name: str) -> str:
        """The category of one of the model's labels ("general", "character",
        "rating", ...); "" for a model without categories."""
        return self._categories.get(name, "")

    @property
    def batcher(self) -> DynamicBatcher[np.ndarray, np.ndarray]:
        return self.pipeline.batcher

    def _scores_and_features(self, batch: np.ndarray, alone: bool) -> np.ndarray:
        scores, features = self.model.predict_with_features(batch, alone=alone)
        return np.concatenate([scores, features], axis=1)

    def _warm_up(self, sizes: tuple[int, ...]) -> None:
        """Runs the model at every batch size it will see, on the thread that
        will run it, and checks its outputs match its labels."""
        start = time.perf_counter()
        self.model.warm_up(sizes)
        log.info(
            "model %s warmed up on %s (batch sizes %s) in %.1fs",
            self.model_id,
            self.model.device,
            ",".join(map(str, sizes)),
            time.perf_counter() - start,
        )

    def tag(
        self,
        files: ImageFiles,
        threshold: float | None = None,
        limit: int = 0,
        timeout: float | None = None,
    ) -> list[TagList]:
        """Tags for each ``(data, filename)`` in order: highest score first,
        only scores at or above ``threshold`` (default: the model's own), at
        most ``limit`` per image (0: no limit). Any invalid file fails the
        whole call with an error naming it."""
        return self.tag_with_features(files, threshold, limit, timeout)[0]

    def tag_with_features(
        self,
        files: ImageFiles,
        threshold: float | None = None,
        limit: int = 0,
        timeout: float | None = None,
    ) -> tuple[list[TagList], list[np.ndarray] | None]:
        """:meth:`tag`, plus each image's feature vector from the same
        forward pass (float32, identified by :attr:`features_id`), or None
        when the model gives none."""
        self.pipeline.check_count(files)
        self._check_params(threshold, limit)
        rows = self.pipeline.run(files, timeout)
        count = self.model.label_count
        tags = [self.select(row[:count], threshold, limit) for row in rows]
        return tags, ([row[count:] for row in rows] if self.features_id else None)

    def select(self, scores: np.ndarray, threshold: float | None = None, limit: int = 0) -> TagList:
        """The tags one image's scores earn, highest first. In exclusive
        categories (a WD rating) only the single best label can qualify."""
        cutoff = self.default_thresholds if threshold is None else np.full_like(scores, threshold)
        keep = scores >= cutoff
        for group in self.model.exclusive_groups:
            if group.size:
                best = group[int(np.argmax(scores[group]))]
                keep[group] = False
                keep[best] = scores[best] >= cutoff[best]
        chosen = np.flatnonzero(keep)
        chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
        if limit:
            chosen = chosen[:limit]
        names = self.model.labels.names
        return [(names[i], float(scores[i])) for i in chosen]

    def _check_params(self, threshold: float | None, limit: int) -> None:
        if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise InvalidArgument(
                f"'threshold' must be a number between 0 and 1, got {threshold:g}", "invalid_threshold"
            )
        if not 0 <= limit <= self.model.label_count:
            raise InvalidArgument(
                f"'limit' must be between 1 and {self.model.label_count} (the model's label count), got {limit}",
                "invalid_limit",
            )

    def close(self) -> None:
        """Finishes queued work and stops the batcher's worker."""
        self.pipeline.close()
