"""The gRPC face of the taste loop's reads
(``tagrate.dataset.v1.TasteLoopService``)."""

from __future__ import annotations

import grpc

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import tasteloop_pb2, tasteloop_pb2_grpc

from .. import checks
from ..db import Database
from . import crud

REGISTRATION = (
    tasteloop_pb2_grpc.add_TasteLoopServiceServicer_to_server,
    tasteloop_pb2.DESCRIPTOR.services_by_name["TasteLoopService"].full_name,
)
MAX_RATE_NEXT = 100
MAX_NEIGHBOURS = 50
MAX_FILTER_TAGS = 16


def _limit(value: int, most: int) -> int:
    if not 1 <= value <= most:
        raise InvalidArgument(f"'limit' must be 1-{most}, got {value}", "invalid_limit")
    return value


class TasteLoopServicer(tasteloop_pb2_grpc.TasteLoopServiceServicer):
    def __init__(self, db: Database) -> None:
        self.db = db

    def GetRateNext(self, request: tasteloop_pb2.GetRateNextRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        extractor_id = checks.identifier(request.extractor_id, "extractor_id")
        limit = _limit(request.limit, MAX_RATE_NEXT)
        if len(request.include_tags) + len(request.exclude_tags) > MAX_FILTER_TAGS:
            raise InvalidArgument(f"at most {MAX_FILTER_TAGS} tags may filter the candidates", "invalid_filters")
        with self.db.snapshot() as session:
            chosen = crud.rate_next(
                session, user, extractor_id, limit, list(request.include_tags), list(request.exclude_tags)
            )
        return tasteloop_pb2.GetRateNextResponse(
            user=user,
            strategy=chosen.strategy,
            model_version=chosen.model_version,
            images=[
                tasteloop_pb2.RateNextImage(image=item.image, predicted=item.predicted, reason=item.reason)
                for item in chosen.items
            ],
        )

    def ExplainImage(self, request: tasteloop_pb2.ExplainImageRequest, context: grpc.ServicerContext):
        user = validation.user_name(request.user)
        image = validation.image_name(request.image)
        extractor_id = checks.identifier(request.extractor_id, "extractor_id")
        limit = _limit(request.limit, MAX_NEIGHBOURS)
        with self.db.snapshot() as session:
            found = crud.explain(session, user, image, extractor_id, limit)
        return tasteloop_pb2.ExplainImageResponse(
            image=found.image,
            predicted=found.predicted,
            model_version=found.model_version,
            neighbours=[
                tasteloop_pb2.RatedNeighbour(image=n.image, rating=n.rating, similarity=n.similarity)
                for n in found.neighbours
            ],
            tags=[tasteloop_pb2.TagEffect(tag=t.tag, effect=t.effect, images=t.images) for t in found.tags],
        )
