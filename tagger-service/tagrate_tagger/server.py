"""The tagger's gRPC face: decode the request, call :class:`Tagger`, encode
the answer. Errors are TagrateErrors raised by the domain code; the shared
server interceptor maps them to status codes."""

from __future__ import annotations

import logging

import grpc

from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tagrate_common.vision.models import ImageModel

from .config import TaggerSettings
from .models import load_tagger_model
from .tagging import Tagger

log = logging.getLogger(__name__)

SERVICE_NAME = "tagrate.tagger.v1.TaggerService"


class TaggerServicer(tagger_pb2_grpc.TaggerServiceServicer):
    def __init__(self, tagger: Tagger) -> None:
        self.tagger = tagger

    def Tag(self, request: tagger_pb2.TagRequest, context: grpc.ServicerContext) -> tagger_pb2.TagResponse:
        threshold = request.threshold if request.HasField("threshold") else None
        results, features = self.tagger.tag_with_features(
            [(image.data, image.filename) for image in request.images],
            threshold=threshold,
            limit=request.limit,
            timeout=context.time_remaining(),
        )
        reply = tagger_pb2.TagResponse(
            model_id=self.tagger.model_id,
            results=[
                tagger_pb2.ImageTags(tags=[tagger_pb2.TagScore(name=name, score=score) for name, score in tags])
                for tags in results
            ],
        )
        if request.want_features and features is not None:
            reply.features_id = self.tagger.features_id or ""
            reply.features.extend(common_pb2.FeatureVector(values=vector.tolist()) for vector in features)
        return reply

    def GetModelInfo(
        self, request: tagger_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> tagger_pb2.ModelInfo:
        model = self.tagger.model
        return tagger_pb2.ModelInfo(
            model_id=model.model_id,
            architecture=model.manifest.architecture,
            format=model.manifest.format,
            default_threshold=self.tagger.default_threshold,
            label_count=model.label_count,
            features_id=self.tagger.features_id or "",
        )


def create_server(settings: TaggerSettings, model: ImageModel | None = None) -> GrpcServer:
    """A tagger server, not yet started. The model (``model`` or the one the
    settings name) is loaded and warmed up here, before the server can bind,
    so health never reports SERVING for a tagger that would answer slowly."""
    owns_model = model is None  # a model passed in may serve others too
    tagger = Tagger.from_settings(model or load_tagger_model(settings), settings)

    def shutdown() -> None:
        tagger.close()
        if owns_model:
            tagger.model.close()

    return GrpcServer(
        "tagger",
        settings,
        [(tagger_pb2_grpc.add_TaggerServiceServicer_to_server, TaggerServicer(tagger), SERVICE_NAME)],
        on_shutdown=shutdown,
    )
