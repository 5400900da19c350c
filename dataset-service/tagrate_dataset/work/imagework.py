"""What tagging and feature extraction have in common: stored images are
sent in batches to a model service (the tagger, the rater) and what comes
back is stored together with the queue's bookkeeping, in one transaction per
batch. :class:`~tagrate_dataset.tags.tagging.Tagging` and
:class:`~tagrate_dataset.images.features.FeatureCache` fill in which service,
which call and how a result is stored.

An image the service refuses (INVALID_ARGUMENT: damaged, not an image, over
its limits), or whose blob is missing, is a poison image: it is recorded as
failed work with the reason and never blocks the images around it. Any
other failure (the service is unreachable, overloaded, failed, or swapped
its model mid-batch) raises, and nothing of the batch is written; the
background worker tells those apart (``worker.py``), which is why the model
calls (:meth:`ImageWork.compute`) and the writing (:meth:`ImageWork.store`)
are separate steps.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlmodel import Session

from tagrate_common.errors import TagrateError

from .. import records
from ..db import Database
from ..images.blobs import BlobStore
from ..models import WorkKind
from ..peers import ImageFile, refuses_image
from ..records import StoredImage
from . import queue as workqueue

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT")  # what the service says it runs (TaggerModelInfo, ExtractorInfo)
ResultT = TypeVar("ResultT")  # one image's result (a tag list, a vector)


@dataclass(frozen=True)
class BatchOutcome(Generic[ResultT]):
    """What became of one batch: stored results, and refused images with why."""

    results: list[tuple[StoredImage, ResultT]]
    refused: list[tuple[StoredImage, str]]


class ImageWork(ABC, Generic[ModelT, ResultT]):
    """One kind of work on stored images, done by one model service."""

    kind: WorkKind
    service: str  # the model service's name, as logs and errors say it

    def __init__(self, db: Database, blobs: BlobStore, batch_size: int) -> None:
        self.db = db
        self.blobs = blobs
        self.batch_size = batch_size

    @property
    @abstractmethod
    def configured(self) -> bool:
        """Whether the service has an address at all."""

    @abstractmethod
    def current_model(self) -> ModelT:
        """Asks the service which model it runs now."""

    @abstractmethod
    def model_key(self, model: ModelT) -> str:
        """The id results from ``model`` are stored under."""

    @abstractmethod
    def run_model(self, model: ModelT, files: Sequence[ImageFile]) -> list[ResultT]:
        """One call to the service: a result per file, in order."""

    def model_seen(self, session: Session, model: ModelT) -> None:
        """Called in the transaction that queues the work a model the
        service newly runs owes (nothing by default)."""
        return None

    @abstractmethod
    def store_results(self, session: Session, model: ModelT, results: list[tuple[StoredImage, ResultT]]) -> None:
        """Writes the results (the queue's bookkeeping is done by the caller)."""

    def process(self, model: ModelT, images: Sequence[StoredImage]) -> BatchOutcome[ResultT]:
        """Runs ``model`` over ``images`` (in calls of at most ``batch_size``)
        and stores the outcome in one transaction: the results, their work
        items completed, refused images' work marked failed. Raises, writing
        nothing, when the service fails otherwise."""
        outcome = self.compute(model, images)
        self.store(model, outcome)
        return outcome

    def compute(self, model: ModelT, images: Sequence[StoredImage]) -> BatchOutcome[ResultT]:
        """The model calls of :meth:`process`, writing nothing: raises when
        the service fails other than by refusing images."""
        files: list[tuple[StoredImage, ImageFile]] = []
        refused: list[tuple[StoredImage, str]] = []
        for image in images:
            try:
                files.append((image, ImageFile(image.name, self.blobs.get(image.name))))
            except FileNotFoundError:
                log.error(
                    "the blob of stored image %s is missing; it cannot be sent to the %s", image.name, self.service
                )
                refused.append((image, "the image's file is missing from the blob store"))
        results: list[tuple[StoredImage, ResultT]] = []
        for start in range(0, len(files), self.batch_size):
            done, bad = self._run_splitting(model, files[start : start + self.batch_size])
            results += done
            refused += bad
        return BatchOutcome(results, refused)

    def store(self, model: ModelT, outcome: BatchOutcome[ResultT]) -> None:
        """Writes what :meth:`compute` found, in one transaction."""
        self.db.write(lambda session: self._store(session, model, outcome))
        for image, reason in outcome.refused:
            log.warning(
                "the %s refused image %s; its %s work is marked failed: %s", self.service, image.name, self.kind, reason
            )

    def _run_splitting(
        self, model: ModelT, files: list[tuple[StoredImage, ImageFile]]
    ) -> tuple[list[tuple[StoredImage, ResultT]], list[tuple[StoredImage, str]]]:
        """One call for the batch; when the service refuses it, one call per
        image, so only the poison images fail (a refused batch may also just
        be larger than the service accepts)."""
        try:
            answers = self.run_model(model, [file for _, file in files])
            return [(image, answer) for (image, _), answer in zip(files, answers, strict=True)], []
        except TagrateError as exc:
            if not refuses_image(exc):
                raise
            if len(files) == 1:
                return [], [(files[0][0], exc.message)]
        results: list[tuple[StoredImage, ResultT]] = []
        refused: list[tuple[StoredImage, str]] = []
        for item in files:
            done, bad = self._run_splitting(model, [item])
            results += done
            refused += bad
        return results, refused

    def _store(self, session: Session, model: ModelT, outcome: BatchOutcome[ResultT]) -> None:
        key = self.model_key(model)
        # Images deleted while the model ran are done: nothing of theirs is
        # written back (their work items went with them). A delete that
        # commits after this check makes the writes below fail on the foreign
        # key, and the retried transaction sees it gone.
        live = records.existing_image_ids(
            session, [image.image_id for image, _ in (*outcome.results, *outcome.refused)]
        )
        results = [(image, result) for image, result in outcome.results if image.image_id in live]
        if results:
            self.store_results(session, model, results)
        workqueue.complete(session, self.kind, [image.image_id for image, _ in results])
        for image, reason in outcome.refused:
            if image.image_id in live:
                workqueue.fail(session, self.kind, image.image_id, key, reason)
