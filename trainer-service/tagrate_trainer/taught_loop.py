"""The trainer's background loop for taught tags: every
``taught_tag_poll_seconds`` it asks the dataset service which manual tags
have examples that changed (and settled), learns each (``taught.py``) and
publishes the classifier, which the dataset service applies to every image.
A failure (a service down, examples changed meanwhile) is logged and the
tag is tried again on a later round; nothing is half-written."""

from __future__ import annotations

import logging
import threading

import numpy as np

from tagrate_common.protos import owned_tags_pb2

from .config import TrainerSettings
from .peers import Peers
from .taught import learn

log = logging.getLogger(__name__)

# A threshold no score reaches (JSON and both databases hold it, unlike inf).
NEVER = 1e9


def _matrix(data: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").reshape(-1, dim) if dim else np.zeros((0, 0), np.float32)


class TaughtTagLearner:
    def __init__(self, settings: TrainerSettings, peers: Peers) -> None:
        self.settings = settings
        self.peers = peers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.taught_tag_poll_seconds <= 0 or not self.settings.dataset_addr:
            return
        self._thread = threading.Thread(target=self._run, name="taught-tags", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.taught_tag_poll_seconds):
            try:
                self.round()
            except Exception as exc:
                log.warning("taught tags: %s", str(exc)[:300])

    def round(self) -> list[str]:
        """Learns every due tag once; returns the tags published."""
        extractor = self.peers.extractor().extractor_id
        stub = self.peers.dataset.stub.owned_tags
        due = stub.DueTaughtTags(
            owned_tags_pb2.DueTaughtTagsRequest(
                extractor_id=extractor,
                min_examples=self.settings.taught_tag_min_examples,
                settle_seconds=self.settings.taught_tag_settle_seconds,
            )
        )
        for tag in due.forgotten:
            log.info("taught tag forgotten (too few examples)", extra={"tag": tag})
        published = []
        for tag in due.tags:
            if self._stop.is_set():
                break
            found = stub.GetTaughtExamples(
                owned_tags_pb2.GetTaughtExamplesRequest(
                    tag=tag, extractor_id=extractor, others=self.settings.taught_tag_others, seed=self.settings.seed
                )
            )
            model = learn(
                _matrix(found.positives, found.dim),
                _matrix(found.negatives, found.dim),
                _matrix(found.others, found.dim),
                found.population,
                self.settings.taught_tag_precision,
                self.settings.seed,
            )
            threshold = model.threshold if np.isfinite(model.threshold) else NEVER
            reply = stub.PublishTaughtTag(
                owned_tags_pb2.PublishTaughtTagRequest(
                    tag=tag,
                    digest=found.digest,
                    extractor_id=extractor,
                    weights=model.weights.astype("<f4").tobytes(),
                    bias=model.bias,
                    threshold=threshold,
                    precision_cv=model.precision_cv,
                    examples=model.examples,
                    negatives=model.negatives,
                )
            )
            log.info("taught tag learned", extra={"tag": tag, "images_tagged": reply.images_tagged})
            published.append(tag)
        return published
