"""Tagging stored images with the tagger's current model: the background
work for new images and UpdateTags (/updatetags).

Every score from ``tag_score_floor`` up (or from the model's threshold, if
that is lower; at most ``tag_max_per_image``) is stored with the model id,
and the model is registered with its threshold: /getimagetags and tag
filters then use the scores at or above the threshold, which can change
without running the model again. An image counts as tagged only by the
current model; images tagged by an older one count as untagged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from tagrate_common.errors import TagrateError

from ..config import DatasetSettings
from ..db import Database
from ..images.blobs import BlobStore
from ..images.crud import put_image_features
from ..images.features import vector_bytes
from ..models import WorkKind
from ..peers import ImageFile, Peers, TaggerModelInfo, TagList
from ..records import StoredImage
from ..work import queue as workqueue
from ..work.imagework import ImageWork
from . import crud

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateTagsOutcome:
    updated_images: int
    model_id: str
    refused_images: int
    requeued_images: int  # failed tag work handed back to the background worker


@dataclass(frozen=True)
class Tagged:
    """One image's tags, and its feature vector when the same pass gave it
    (see :attr:`TaggerModelInfo.embeds_for`)."""

    tags: TagList
    vector: np.ndarray | None = None
    categories: dict[str, str] = dataclasses.field(default_factory=dict)  # of the batch's tags


class Tagging(ImageWork[TaggerModelInfo, Tagged]):
    kind = WorkKind.TAG
    service = "tagger"

    def __init__(self, settings: DatasetSettings, db: Database, blobs: BlobStore, peers: Peers) -> None:
        super().__init__(db, blobs, settings.tag_batch_size)
        self.peers = peers
        self.score_floor = settings.tag_score_floor
        self.max_per_image = settings.tag_max_per_image
        self.max_tag_chars = settings.max_tag_chars
        # The extractor id the last current_model() embeds for (None: it does
        # not): the background worker's embed lane then leaves images whose
        # tag work is due to this lane (see worker.py).
        self.feeds: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.peers.tagger.target)

    def current_model(self) -> TaggerModelInfo:
        """The tagger's model; it also embeds for the rater (``embeds_for``)
        exactly when the tagger's ``features_id`` is the rater's extractor
        id, i.e. both run the same backbone: one forward pass then yields
        the tags and the vector to cache. A rater that is not configured or
        cannot be asked just means two passes (the embed lane's)."""
        model = self.peers.tagger_model()
        if model.per_category:
            # The tagger selects per category (a WD v3 model: general 0.35,
            # character 0.85, one rating): what it returns is what applies.
            model = dataclasses.replace(model, threshold=0.0)
        self.feeds = None
        if model.features_id and self.peers.rater.target:
            try:
                extractor = self.peers.extractor()
            except TagrateError:
                return model
            if extractor.extractor_id == model.features_id:
                self.feeds = extractor.extractor_id
                return dataclasses.replace(model, embeds_for=extractor)
        return model

    def model_key(self, model: TaggerModelInfo) -> str:
        return model.model_id

    def model_seen(self, session: Session, model: TaggerModelInfo) -> None:
        """The tagger's model is the current one from now on: /getimagetags,
        filters and /verifydatasets' ``untagged_images`` follow the switch
        at once, also back to a model that tagged every image before."""
        crud.use_tagger_model(session, model.model_id, model.threshold)

    def run_model(self, model: TaggerModelInfo, files: Sequence[ImageFile]) -> list[Tagged]:
        floor = min(self.score_floor, model.threshold)
        reply = self.peers.tag_and_embed(model, files, floor, self.max_per_image, model.embeds_for)
        if reply.vectors is None:
            return [Tagged(image_tags, None, reply.categories) for image_tags in reply.tags]
        return [
            Tagged(image_tags, vector, reply.categories)
            for image_tags, vector in zip(reply.tags, reply.vectors, strict=True)
        ]

    def store_results(
        self, session: Session, model: TaggerModelInfo, results: list[tuple[StoredImage, Tagged]]
    ) -> None:
        """The tags, and the vectors that came with them, whose embed work is
        then done too (in the same transaction)."""
        crud.use_tagger_model(session, model.model_id, model.threshold)
        embedded: list[int] = []
        categories: dict[str, str] = {}
        for image, tagged in results:
            scores = crud.tag_scores(tagged.tags, self.max_tag_chars)
            crud.put_image_tags(session, image.name, model.model_id, model.threshold, scores)
            categories.update(tagged.categories)
            if tagged.vector is not None and model.embeds_for is not None:
                vector = tagged.vector
                put_image_features(
                    session, image.name, model.embeds_for.extractor_id, vector_bytes(vector), int(vector.size)
                )
                embedded.append(image.image_id)
        crud.set_tag_categories(session, categories)
        workqueue.complete(session, WorkKind.EMBED, embedded)

    def update_tags(self, full: bool, keep_going: Callable[[], bool] = lambda: True) -> UpdateTagsOutcome:
        """Tags every image the tagger's current model has not tagged
        (``full``: every image), a batch per transaction, and returns how many
        were tagged. Unavailable (naming the tagger) when it cannot be
        reached; batches stored before that stay stored, the failing one
        writes nothing. Stops early, between batches, once ``keep_going``
        says so (the caller went away).

        Tag work parked as failed is queued again for the background worker,
        which tries each such image alone with bounded attempts; images whose
        tagging failed before are not tagged here (see
        ``workqueue.images_to_do``), so one that kills the tagger cannot fail
        every /updatetags."""
        model = self.current_model()
        key = self.model_key(model)

        def start(session: Session) -> int:
            # The tagger's model is the current one from now on, even when it
            # has nothing left to tag (it tagged everything before another came).
            crud.use_tagger_model(session, model.model_id, model.threshold)
            return workqueue.retry_failed(session, self.kind)

        requeued = self.db.write(start)
        updated = refused = 0
        after = 0
        while keep_going():
            with self.db.read() as session:
                batch = workqueue.images_to_do(session, self.kind, key, after, self.batch_size, everything=full)
            if not batch:
                break
            after = batch[-1].image_id
            outcome = self.process(model, batch)
            updated += len(outcome.results)
            refused += len(outcome.refused)
        log.info(
            "updated tags",
            extra={"model": key, "images": updated, "refused": refused, "requeued": requeued, "full": full},
        )
        return UpdateTagsOutcome(updated, key, refused, requeued)
