"""The gRPC face of tags people own (``tagrate.dataset.v1.OwnedTagService``):
manual tags added and removed, an image's tags with their sources, aliases
and implications, and the list of taught tags. Each method validates its
request completely (tag names: ``tagrate_common.tagfilter.tag_name``), runs
``owned.py`` in one transaction and encodes the answer. Who may call what
(a user tags as itself; rules are an admin's) is the gateway's check; the
caller handed in is what is recorded."""

from __future__ import annotations

import math

import grpc
import numpy as np

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import owned_tags_pb2, owned_tags_pb2_grpc
from tagrate_common.tagfilter import tag_name

from ..config import DatasetSettings
from ..db import Database
from . import owned, taught

REGISTRATION = (
    owned_tags_pb2_grpc.add_OwnedTagServiceServicer_to_server,
    owned_tags_pb2.DESCRIPTOR.services_by_name["OwnedTagService"].full_name,
)


def _detail(detail: owned.ImageTagDetail) -> owned_tags_pb2.ImageTagDetail:
    return owned_tags_pb2.ImageTagDetail(
        image=detail.image,
        original_name=detail.original_name,
        tags=[
            owned_tags_pb2.DetailTag(tag=tag.tag, source=tag.source, score=tag.score, category=tag.category or "")
            for tag in detail.tags
        ],
    )


def _change(request: owned_tags_pb2.ChangeTagsRequest) -> tuple[str, list[str], str | None]:
    image = validation.image_name(request.image)
    if not request.tags:
        raise validation.missing("tag")
    if len(request.tags) > owned.MAX_TAGS_PER_CHANGE:
        raise InvalidArgument(
            f"'tag' may name at most {owned.MAX_TAGS_PER_CHANGE} tags per request, got {len(request.tags)}",
            "too_many_tags",
        )
    caller = validation.user_name(request.caller, "caller") if request.caller else None
    return image, owned.names(list(request.tags)), caller


class OwnedTagServicer(owned_tags_pb2_grpc.OwnedTagServiceServicer):
    """``tagrate.dataset.v1.OwnedTagService``."""

    def __init__(self, settings: DatasetSettings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def AddTags(self, request: owned_tags_pb2.ChangeTagsRequest, context: grpc.ServicerContext):
        image, tags, caller = _change(request)
        return _detail(self.db.write(lambda session: owned.add_tags(session, image, tags, caller)))

    def RemoveTags(self, request: owned_tags_pb2.ChangeTagsRequest, context: grpc.ServicerContext):
        image, tags, caller = _change(request)
        return _detail(self.db.write(lambda session: owned.remove_tags(session, image, tags, caller)))

    def GetImageTagDetail(self, request: owned_tags_pb2.GetImageTagDetailRequest, context: grpc.ServicerContext):
        image = validation.image_name(request.image)
        with self.db.read() as session:
            return _detail(owned.image_tag_detail(session, image))

    def AddAlias(self, request: owned_tags_pb2.TagAliasRule, context: grpc.ServicerContext):
        alias, tag = tag_name(request.alias, "alias"), tag_name(request.tag, "tag")
        alias, tag, created = self.db.write(lambda session: owned.add_alias(session, alias, tag))
        if not created:
            context.set_trailing_metadata((("tagrate-created", "false"),))
        return owned_tags_pb2.TagAliasRule(alias=alias, tag=tag)

    def ListAliases(self, request: owned_tags_pb2.ListTagRulesRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            rows = owned.list_aliases(session)
        return owned_tags_pb2.ListAliasesResponse(
            aliases=[owned_tags_pb2.TagAliasRule(alias=alias, tag=tag) for alias, tag in rows]
        )

    def DeleteAlias(self, request: owned_tags_pb2.TagAliasRule, context: grpc.ServicerContext):
        alias = tag_name(request.alias, "alias")
        alias, tag = self.db.write(lambda session: owned.delete_alias(session, alias))
        return owned_tags_pb2.TagAliasRule(alias=alias, tag=tag)

    def AddImplication(self, request: owned_tags_pb2.TagImplicationRule, context: grpc.ServicerContext):
        tag, implies = tag_name(request.tag, "tag"), tag_name(request.implies, "implies")
        tag, implies, _ = self.db.write(lambda session: owned.add_implication(session, tag, implies))
        return owned_tags_pb2.TagImplicationRule(tag=tag, implies=implies)

    def ListImplications(self, request: owned_tags_pb2.ListTagRulesRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            rows = owned.list_implications(session)
        return owned_tags_pb2.ListImplicationsResponse(
            implications=[owned_tags_pb2.TagImplicationRule(tag=tag, implies=implies) for tag, implies in rows]
        )

    def DeleteImplication(self, request: owned_tags_pb2.TagImplicationRule, context: grpc.ServicerContext):
        tag, implies = tag_name(request.tag, "tag"), tag_name(request.implies, "implies")
        tag, implies = self.db.write(lambda session: owned.delete_implication(session, tag, implies))
        return owned_tags_pb2.TagImplicationRule(tag=tag, implies=implies)

    def ListTaughtTags(self, request: owned_tags_pb2.ListTagRulesRequest, context: grpc.ServicerContext):
        with self.db.read() as session:
            rows = owned.taught_tags(session)
        return owned_tags_pb2.ListTaughtTagsResponse(
            tags=[
                owned_tags_pb2.TaughtTagInfo(
                    tag=row.tag,
                    examples=row.examples,
                    negatives=row.negatives,
                    images_tagged=row.images_tagged,
                    precision_cv=row.precision_cv,
                    threshold=row.threshold,
                    trained_at=row.trained_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                )
                for row in rows
            ]
        )

    # ---- for the trainer ----

    def DueTaughtTags(self, request: owned_tags_pb2.DueTaughtTagsRequest, context: grpc.ServicerContext):
        extractor = _extractor(request.extractor_id)
        if request.min_examples < 2:
            raise InvalidArgument("'min_examples' must be at least 2", "invalid_min_examples")
        if not (math.isfinite(request.settle_seconds) and request.settle_seconds >= 0):
            raise InvalidArgument("'settle_seconds' must be a number of seconds, 0 or more", "invalid_settle_seconds")
        due, forgotten = self.db.write(
            lambda session: taught.due_tags(session, extractor, request.min_examples, request.settle_seconds)
        )
        return owned_tags_pb2.DueTaughtTagsResponse(tags=due, forgotten=forgotten)

    def GetTaughtExamples(self, request: owned_tags_pb2.GetTaughtExamplesRequest, context: grpc.ServicerContext):
        extractor = _extractor(request.extractor_id)
        tag = tag_name(request.tag)
        if not 0 < request.others <= MAX_OTHERS:
            raise InvalidArgument(f"'others' must be 1 to {MAX_OTHERS}, got {request.others}", "invalid_others")
        with self.db.read() as session:
            found = taught.examples(session, tag, extractor, request.others, request.seed)
        return owned_tags_pb2.TaughtExamples(
            tag=tag,
            digest=found.digest,
            dim=found.dim,
            positives=found.positives,
            negatives=found.negatives,
            others=found.others,
            population=found.population,
        )

    def PublishTaughtTag(self, request: owned_tags_pb2.PublishTaughtTagRequest, context: grpc.ServicerContext):
        extractor = _extractor(request.extractor_id)
        tag = tag_name(request.tag)
        if not request.weights or len(request.weights) % 4:
            raise InvalidArgument("'weights' must be float32 values", "invalid_weights")
        weights = np.frombuffer(request.weights, dtype="<f4")
        numbers = (request.bias, request.threshold, request.precision_cv)
        if not np.isfinite(weights).all() or not all(math.isfinite(value) for value in numbers):
            raise InvalidArgument("the classifier's numbers must be finite", "invalid_weights")
        model = taught.Classifier(
            weights, request.bias, request.threshold, request.precision_cv, request.examples, request.negatives
        )
        tagged = self.db.write(lambda session: taught.publish(session, tag, request.digest, extractor, model))
        return owned_tags_pb2.PublishTaughtTagResponse(images_tagged=tagged)


# Most other images one GetTaughtExamples samples.
MAX_OTHERS = 5000


def _extractor(value: str) -> str:
    if not value or len(value) > 200 or not value.isprintable():
        raise InvalidArgument("'extractor_id' must name a feature extractor", "invalid_extractor_id")
    return value
