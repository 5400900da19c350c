"""The rater's gRPC face: decode the request, call the domain code
(:mod:`.extractor`, :mod:`.store`, :mod:`.rating`), encode the answer.
Errors are TagrateErrors raised by the domain code; the shared server
interceptor maps them to status codes."""

from __future__ import annotations

import logging

import grpc
import numpy as np

from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import common_pb2, rater_pb2, rater_pb2_grpc
from tagrate_common.timestamps import optional_datetime, to_timestamp
from tagrate_common.vision.models import ImageModel

from . import history
from .config import RaterSettings
from .extractor import FeatureExtractor, load_feature_model
from .heads import HeadInfo
from .rating import Rater
from .store import HeadStore
from .users import UserDirectory

log = logging.getLogger(__name__)

SERVICE_NAME = "tagrate.rater.v1.RaterService"


def _files(images) -> list[tuple[bytes, str]]:
    return [(image.data, image.filename) for image in images]


def feature_matrix(request: rater_pb2.ScoreFeaturesRequest, extractor_id: str, dimensions: int) -> np.ndarray:
    """The request's vectors as an (N, D) float32 matrix. Conflict for
    vectors of another extractor (the heads would score them as nonsense);
    InvalidArgument for a malformed matrix."""
    if request.extractor_id != extractor_id:
        raise Conflict(
            f"the vectors are from extractor {request.extractor_id[:200]!r} but the rater runs {extractor_id}",
            "extractor_mismatch",
        )
    if request.dimensions != dimensions or len(request.vectors) % (4 * dimensions):
        raise InvalidArgument(
            f"'vectors' must be rows of {dimensions} float32 values ('dimensions' {request.dimensions}, "
            f"{len(request.vectors)} bytes)",
            "invalid_vectors",
        )
    return np.frombuffer(request.vectors, dtype="<f4").reshape(-1, dimensions).astype(np.float32)


def head_metadata(info: HeadInfo) -> rater_pb2.HeadMetadata:
    return rater_pb2.HeadMetadata(
        user=info.user,
        extractor_id=info.extractor_id,
        snapshot_id=info.snapshot_id,
        metrics=info.metrics,
        created_at=to_timestamp(info.created_at),
        version=info.version,
        kind=info.kind,
    )


class RaterServicer(rater_pb2_grpc.RaterServiceServicer):
    def __init__(self, extractor: FeatureExtractor, heads: HeadStore, rater: Rater) -> None:
        self.extractor = extractor
        self.heads = heads
        self.rater = rater

    def Embed(self, request: rater_pb2.EmbedRequest, context: grpc.ServicerContext) -> rater_pb2.EmbedResponse:
        features = self.extractor.features(_files(request.images), timeout=context.time_remaining())
        return rater_pb2.EmbedResponse(
            extractor_id=self.extractor.extractor_id,
            vectors=[common_pb2.FeatureVector(values=row) for row in features.tolist()],
        )

    def Rate(self, request: rater_pb2.RateRequest, context: grpc.ServicerContext) -> rater_pb2.RateResponse:
        results = self.rater.rate(_files(request.images), request.user, timeout=context.time_remaining())
        reply = rater_pb2.RateResponse()
        for r in results:  # add() builds in place: for 1,000 users it is measurably cheaper
            reply.users.add(user=r.user, model=r.model, model_version=r.model_version, ratings=r.ratings)
        return reply

    def PublishHead(
        self, request: rater_pb2.PublishHeadRequest, context: grpc.ServicerContext
    ) -> rater_pb2.PublishHeadResponse:
        meta = request.metadata
        info = self.heads.publish(
            user=meta.user,
            kind=meta.kind,
            weights=request.weights,
            extractor_id=meta.extractor_id,
            snapshot_id=meta.snapshot_id,
            metrics=dict(meta.metrics),
            created_at=optional_datetime(meta, "created_at"),
        )
        return rater_pb2.PublishHeadResponse(metadata=head_metadata(info))

    def ListHeads(
        self, request: rater_pb2.ListHeadsRequest, context: grpc.ServicerContext
    ) -> rater_pb2.ListHeadsResponse:
        return rater_pb2.ListHeadsResponse(heads=[head_metadata(info) for info in self.heads.live.infos()])

    def ScoreFeatures(
        self, request: rater_pb2.ScoreFeaturesRequest, context: grpc.ServicerContext
    ) -> rater_pb2.ScoreFeaturesResponse:
        features = feature_matrix(request, self.extractor.extractor_id, self.extractor.dimensions)
        reply = rater_pb2.ScoreFeaturesResponse()
        for subject, loaded, scores in self.heads.live.score(list(request.subjects), features):
            reply.subjects.add(
                subject=subject, model=loaded.info.model, model_version=loaded.info.version, scores=scores.tolist()
            )
        return reply

    def ListHeadVersions(
        self, request: rater_pb2.ListHeadVersionsRequest, context: grpc.ServicerContext
    ) -> rater_pb2.ListHeadVersionsResponse:
        kept = history.versions(self.heads, request.user)
        return rater_pb2.ListHeadVersionsResponse(
            versions=[rater_pb2.HeadVersion(metadata=head_metadata(v.info), serving=v.serving) for v in kept]
        )

    def UseHeadVersion(
        self, request: rater_pb2.UseHeadVersionRequest, context: grpc.ServicerContext
    ) -> rater_pb2.UseHeadVersionResponse:
        info = history.use(self.heads, request.user, request.version)
        return rater_pb2.UseHeadVersionResponse(metadata=head_metadata(info))

    def GetExtractorInfo(
        self, request: rater_pb2.GetExtractorInfoRequest, context: grpc.ServicerContext
    ) -> rater_pb2.ExtractorInfo:
        return rater_pb2.ExtractorInfo(extractor_id=self.extractor.extractor_id, dimensions=self.extractor.dimensions)


def create_server(settings: RaterSettings, model: ImageModel | None = None) -> GrpcServer:
    """A rater server, not yet started. The extractor model (``model`` or
    the one the settings name) is loaded and warmed up, and every head in the
    store loaded, before the server can bind, so health never reports
    SERVING for a rater that would answer slowly or without its heads. From
    then on heads that other replicas publish into the same folder are
    picked up every ``heads_reload_seconds``."""
    owns_model = model is None  # a model passed in may serve others too
    extractor = FeatureExtractor.from_settings(model or load_feature_model(settings), settings)
    try:
        heads = HeadStore.open(
            settings.heads_store(), extractor.extractor_id, extractor.dimensions, settings.keep_head_versions
        )
    except BaseException:
        extractor.close()
        raise
    users = UserDirectory.from_settings(settings)
    if settings.heads_reload_seconds > 0:
        heads.start_reloading(settings.heads_reload_seconds)

    def shutdown() -> None:
        heads.close()
        extractor.close()
        users.close()
        if owns_model:
            extractor.model.close()

    servicer = RaterServicer(extractor, heads, Rater(extractor, heads, users))
    return GrpcServer(
        "rater",
        settings,
        [(rater_pb2_grpc.add_RaterServiceServicer_to_server, servicer, SERVICE_NAME)],
        on_shutdown=shutdown,
    )
