"""The feature vector cache: each stored image's vector from the rater's
feature extractor, computed once and kept per (image, extractor id), so
training never runs the backbone again. A new extractor id means the old
vectors do not count: images are embedded again for it (in the background,
or on demand for training data).

Vectors are stored as float32 little-endian bytes (``ImageFeatures``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from sqlmodel import Session

from ..config import DatasetSettings
from ..db import Database
from ..models import WorkKind
from ..peers import ExtractorInfo, ImageFile, Peers
from ..records import StoredImage
from ..work.imagework import ImageWork
from . import crud
from .blobs import BlobStore

log = logging.getLogger(__name__)


def vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


class FeatureCache(ImageWork[ExtractorInfo, np.ndarray]):
    kind = WorkKind.EMBED
    service = "rater"

    def __init__(self, settings: DatasetSettings, db: Database, blobs: BlobStore, peers: Peers) -> None:
        super().__init__(db, blobs, settings.embed_batch_size)
        self.peers = peers

    @property
    def configured(self) -> bool:
        return bool(self.peers.rater.target)

    def current_model(self) -> ExtractorInfo:
        return self.peers.extractor()

    def model_key(self, model: ExtractorInfo) -> str:
        return model.extractor_id

    def run_model(self, model: ExtractorInfo, files: Sequence[ImageFile]) -> list[np.ndarray]:
        return list(self.peers.embed(model, files))

    def store_results(
        self, session: Session, model: ExtractorInfo, results: list[tuple[StoredImage, np.ndarray]]
    ) -> None:
        for image, vector in results:
            crud.put_image_features(session, image.name, model.extractor_id, vector_bytes(vector), int(vector.size))

    def filler(self, extractor_id: str) -> VectorFiller:
        return VectorFiller(self, extractor_id)


class VectorFiller:
    """Computes, for one training data stream, the vectors from
    ``extractor_id`` that are not cached yet: each image once, cached for
    every later reader. When the rater is not configured, runs another
    extractor, or refuses an image, the vectors stay missing (the stream
    says so by leaving them unset)."""

    def __init__(self, cache: FeatureCache, extractor_id: str) -> None:
        self.cache = cache
        self.extractor_id = extractor_id
        self._extractor: ExtractorInfo | None = None
        self._usable = cache.configured
        self._computed: dict[int, bytes | None] = {}  # image id -> vector (None: refused)

    def vectors(self, images: Sequence[StoredImage]) -> dict[int, bytes]:
        """Vectors for as many of ``images`` as can be computed, by image id.
        Unavailable (naming the rater) when the rater cannot be reached."""
        wanted = list({image.image_id: image for image in images if image.image_id not in self._computed}.values())
        if wanted and self._usable:
            if self._extractor is None:
                self._extractor = self.cache.current_model()
                if self._extractor.extractor_id != self.extractor_id:
                    log.warning(
                        "training data asks for vectors from extractor %s but the rater runs %s; the missing "
                        "vectors cannot be computed",
                        self.extractor_id,
                        self._extractor.extractor_id,
                    )
                    self._usable = False
            if self._usable:
                outcome = self.cache.process(self._extractor, wanted)
                self._computed.update({image.image_id: vector_bytes(vector) for image, vector in outcome.results})
                self._computed.update({image.image_id: None for image, _ in outcome.refused})
                log.info("computed missing feature vectors", extra={"images": len(outcome.results)})
        found = {image.image_id: self._computed.get(image.image_id) for image in images}
        return {image_id: vector for image_id, vector in found.items() if vector is not None}
