"""The tagger's gRPC face: decode the request, call :class:`Tagger`, encode
the answer. Errors are TagrateErrors raised by the domain code; the shared
server interceptor maps them to status codes."""

from __future__ import annotations

import logging

import grpc

from tagrate_common.errors import Unavailable
from tagrate_common.grpc_server import GrpcServer
from tagrate_common.protos import common_pb2, tagger_pb2, tagger_pb2_grpc
from tagrate_common.vision.models import ImageModel
from tagrate_common.vision.registry import RegisteredModel

from .config import TaggerSettings
from .models import load_tagger_model
from .switching import ModelSwitch
from .tagging import Tagger

log = logging.getLogger(__name__)

SERVICE_NAME = "tagrate.tagger.v1.TaggerService"


def _registered(model: RegisteredModel) -> tagger_pb2.RegisteredModel:
    return tagger_pb2.RegisteredModel(
        model_id=model.model_id,
        format=model.format,
        architecture=model.architecture,
        label_count=model.labels,
        categories=model.categories,
        thresholds=model.thresholds,
        input_size=model.input_size,
        source=model.source,
        added_at=model.added_at,
    )


def _model_info(tagger: Tagger) -> tagger_pb2.ModelInfo:
    model = tagger.model
    return tagger_pb2.ModelInfo(
        model_id=model.model_id,
        architecture=model.manifest.architecture,
        format=model.manifest.format,
        default_threshold=tagger.default_threshold,
        label_count=model.label_count,
        features_id=tagger.features_id or "",
        per_category=tagger.per_category,
    )


class TaggerServicer(tagger_pb2_grpc.TaggerServiceServicer):
    def __init__(self, switch: ModelSwitch) -> None:
        self.switch = switch

    @property
    def tagger(self) -> Tagger:
        return self.switch.tagger

    def Tag(self, request: tagger_pb2.TagRequest, context: grpc.ServicerContext) -> tagger_pb2.TagResponse:
        threshold = request.threshold if request.HasField("threshold") else None
        files = [(image.data, image.filename) for image in request.images]
        tagger = self.tagger
        try:
            results, features = tagger.tag_with_features(files, threshold, request.limit, context.time_remaining())
        except Unavailable:
            if self.tagger is tagger:
                raise
            tagger = self.tagger  # the model was switched under this call: the new one answers
            results, features = tagger.tag_with_features(files, threshold, request.limit, context.time_remaining())
        reply = tagger_pb2.TagResponse(
            model_id=tagger.model_id,
            results=[
                tagger_pb2.ImageTags(
                    tags=[
                        tagger_pb2.TagScore(name=name, score=score, category=tagger.category(name))
                        for name, score in tags
                    ]
                )
                for tags in results
            ],
        )
        if request.want_features and features is not None:
            reply.features_id = tagger.features_id or ""
            reply.features.extend(common_pb2.FeatureVector(values=vector.tolist()) for vector in features)
        return reply

    def GetModelInfo(
        self, request: tagger_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> tagger_pb2.ModelInfo:
        return _model_info(self.tagger)

    def AddModel(
        self, request: tagger_pb2.AddModelRequest, context: grpc.ServicerContext
    ) -> tagger_pb2.AddModelResponse:
        registered, added = self.switch.add(request.path)
        return tagger_pb2.AddModelResponse(model=_registered(registered), added=added)

    def ListModels(self, request: tagger_pb2.ListModelsRequest, context: grpc.ServicerContext) -> tagger_pb2.ModelList:
        models, active = self.switch.models()
        return tagger_pb2.ModelList(
            models=[_registered(m) for m in models], active=active, running=self.tagger.model_id
        )

    def UseModel(self, request: tagger_pb2.UseModelRequest, context: grpc.ServicerContext) -> tagger_pb2.ModelInfo:
        return _model_info(self.switch.use(request.model_id))


def create_server(settings: TaggerSettings, model: ImageModel | None = None) -> GrpcServer:
    """A tagger server, not yet started. The model (``model`` or the one the
    settings name, see :mod:`.models`) is loaded and warmed up here, before
    the server can bind, so health never reports SERVING for a tagger that
    would answer slowly."""
    owns_model = model is None  # a model passed in may serve others too
    tagger = Tagger.from_settings(model or load_tagger_model(settings), settings)
    switch = ModelSwitch(tagger, settings, owns_model)
    return GrpcServer(
        "tagger",
        settings,
        [(tagger_pb2_grpc.add_TaggerServiceServicer_to_server, TaggerServicer(switch), SERVICE_NAME)],
        on_shutdown=switch.close,
    )
