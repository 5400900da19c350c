"""The gRPC face of tags (``tagrate.dataset.v1.TagService``): an image's
tags, the tag list with counts, storing a tagger model's scores, and the
catch-up that tags what the current model has not (``tagging.py``, which
calls the tagger). Each method decodes its request, validates it
completely, calls the domain (``crud.py``, ``queries.py``) and encodes the
answer."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import grpc

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import tags_pb2, tags_pb2_grpc

from .. import checks, records
from ..config import DatasetSettings
from ..db import Database
from . import crud, queries
from .tagging import Tagging

log = logging.getLogger(__name__)

# What the server registers: the generated add function and the full service name.
REGISTRATION = (
    tags_pb2_grpc.add_TagServiceServicer_to_server,
    tags_pb2.DESCRIPTOR.services_by_name["TagService"].full_name,
)

MAX_TAG_LIST = 100_000


class TagServicer(tags_pb2_grpc.TagServiceServicer):
    """``tagrate.dataset.v1.TagService``."""

    def __init__(
        self,
        settings: DatasetSettings,
        db: Database,
        tagging: Tagging,
        on_new_image: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.tagging = tagging
        self.on_new_image = on_new_image

    def GetImageTags(self, request: tags_pb2.GetImageTagsRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        with self.db.read() as session:
            tags = crud.image_tags(session, name)
        return tags_pb2.GetImageTagsResponse(
            image=tags.image,
            tagged=tags.tagged,
            model_id=tags.model_id,
            tags=[tags_pb2.ImageTagScore(name=tag, score=score) for tag, score in tags.tags],
            source=tags.source,
            original_name=tags.original_name,
        )

    def ListTags(self, request: tags_pb2.ListTagsRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user) if request.user else None
        if request.limit > MAX_TAG_LIST:
            raise InvalidArgument(
                f"'limit' must be a whole number from 1 to {MAX_TAG_LIST}, got {request.limit}", "invalid_limit"
            )
        prefix = crud.normalise_tag(request.prefix)
        if len(prefix) > self.settings.max_tag_chars or not prefix.isprintable():
            raise InvalidArgument(
                f"'prefix' must be at most {self.settings.max_tag_chars} printable characters", "invalid_prefix"
            )
        contains = crud.normalise_tag(request.contains).replace(" ", "_")
        if len(contains) > self.settings.max_tag_chars or not contains.isprintable():
            raise InvalidArgument(
                f"'contains' must be at most {self.settings.max_tag_chars} printable characters", "invalid_contains"
            )
        with self.db.read() as session:
            user_id = records.require_user(session, user).id if user is not None else None
            counts = queries.tag_counts(session, prefix, user_id, request.limit, contains)
        return tags_pb2.ListTagsResponse(
            model=counts.model, tags=[tag for tag, _ in counts.tags], counts=[n for _, n in counts.tags]
        )

    def PutImageTags(self, request: tags_pb2.PutImageTagsRequest, context: grpc.ServicerContext):
        name = validation.image_name(request.image)
        model_id = checks.identifier(request.model_id, "model_id")
        threshold = request.threshold
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise InvalidArgument(
                f"'threshold' must be a number between 0 and 1, got {threshold!r}", "invalid_threshold"
            )
        scores = crud.tag_scores(((tag.name, tag.score) for tag in request.tags), self.settings.max_tag_chars)
        model = self.db.write(lambda session: crud.put_image_tags(session, name, model_id, threshold, scores))
        log.debug("stored tags", extra={"image": name, "model": model.model_id, "tags": len(scores)})
        return tags_pb2.PutImageTagsResponse()

    def UpdateTags(self, request: tags_pb2.UpdateTagsRequest, context: grpc.ServicerContext):
        # A caller that gave up (deadline, disconnect) stops the catch-up
        # between batches; what was stored so far stays stored.
        outcome = self.tagging.update_tags(request.full, keep_going=context.is_active)
        if outcome.requeued_images:
            self.on_new_image()  # wakes the worker for the failed work queued again
        return tags_pb2.UpdateTagsResponse(updated_images_count=outcome.updated_images, model_id=outcome.model_id)
