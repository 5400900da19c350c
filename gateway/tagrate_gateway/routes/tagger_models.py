"""Bring your own tagger (tagger service): /taggermodels lists the
registered models, POST /taggermodels checks and registers a model folder on
the server, POST /taggermodels/use switches the tagger to one (the dataset
service then re-tags every stored image in the background, with its
progress in /verifydatasets). ``tagrate models`` is the command line for
them."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import tagger_pb2

from .. import params
from ..auth import AdminOnly, AnyCaller
from ..bodies import post_fields
from ..deps import SettingsDep, TaggerDep
from ..errors import error_responses
from ..schemas.tagger_models import TaggerModelAdded, TaggerModelItem, TaggerModels, TaggerModelUsed
from ..uploads.openapi import multipart_body, text_property

router = APIRouter(tags=["tagger models"], dependencies=[Depends(params.no_repeated_query)])

# Checking a model loads it and runs an image through it; a WD v3 model is
# hundreds of megabytes, and switching also warms it up.
MODEL_CALL_TIMEOUT_SECONDS = 600.0


def _item(model: tagger_pb2.RegisteredModel) -> TaggerModelItem:
    return TaggerModelItem(
        model=model.model_id,
        format=model.format,
        architecture=model.architecture,
        labels=model.label_count,
        categories=dict(sorted(model.categories.items())),
        thresholds={k: round(v, 4) for k, v in sorted(model.thresholds.items())},
        input_size=model.input_size,
        source=model.source,
        added_at=model.added_at,
    )


async def _field(request: Request, settings: SettingsDep, name: str) -> str:
    value = (await post_fields(request, settings, accept_json=True)).get(name)
    if value is None or not str(value).strip():
        raise InvalidArgument(f"'{name}' is required", "missing_parameter")
    return str(value).strip()


@router.get(
    "/taggermodels",
    dependencies=[AnyCaller],
    summary="The registered tagger models and the one the tagger runs",
    response_model=TaggerModels,
    responses=error_responses(503, 504),
)
async def list_models(tagger: TaggerDep) -> TaggerModels:
    reply = await tagger.stub.ListModels(tagger_pb2.ListModelsRequest())
    return TaggerModels(models=[_item(m) for m in reply.models], active=reply.active, running=reply.running)


@router.post(
    "/taggermodels",
    dependencies=[AdminOnly],
    summary="Check and register a tagger model folder on the server (admin)",
    description="`path`: an absolute path on the tagger's machine to a WD v3 (model.onnx + selected_tags.csv) "
    "or DeepDanbooru (model.onnx + tags.txt) folder. 400 saying what is wrong with it (missing files, an "
    "input that is not NHWC [batch, size, size, 3], a tag list that does not match the outputs).",
    response_model=TaggerModelAdded,
    responses=error_responses(400, 503, 504),
    openapi_extra=multipart_body({"path": text_property("The model folder on the server.", "/models/wd-v3")}, ["path"]),
)
async def add_model(request: Request, settings: SettingsDep, tagger: TaggerDep) -> TaggerModelAdded:
    path = await _field(request, settings, "path")
    reply = await tagger.stub.AddModel(tagger_pb2.AddModelRequest(path=path), timeout=MODEL_CALL_TIMEOUT_SECONDS)
    return TaggerModelAdded(added=reply.added, model=_item(reply.model))


@router.post(
    "/taggermodels/use",
    dependencies=[AdminOnly],
    summary="Make a registered model the tagger's model (admin)",
    description="`model`: a registered model's id, or `default` for the embedded one. The tagger loads and warms "
    "it up, then swaps it in; every stored image is re-tagged in the background (progress: /verifydatasets' "
    "`work.tag.pending`). 404 unknown id; 409 when TAGGER_MODEL_DIR pins the model.",
    response_model=TaggerModelUsed,
    responses=error_responses(400, 404, 409, 503, 504),
    openapi_extra=multipart_body(
        {"model": text_property("A registered model id, or `default`.", "default")}, ["model"]
    ),
)
async def use_model(request: Request, settings: SettingsDep, tagger: TaggerDep) -> TaggerModelUsed:
    model_id = await _field(request, settings, "model")
    reply = await tagger.stub.UseModel(
        tagger_pb2.UseModelRequest(model_id=model_id), timeout=MODEL_CALL_TIMEOUT_SECONDS
    )
    return TaggerModelUsed(model=reply.model_id, format=reply.format, labels=reply.label_count)
