"""The original's global-model paths: /trainall (trainer service),
/verifyfulldataset and /createfulldataset (dataset service).

The original built a "full dataset" file from every user's ratings before
training its global model on it. tagrate keeps no such file: the global
model trains from the live ratings, and whether it is up to date is the
snapshot comparison /verifydatasets and /getstats use. So
/createfulldataset only answers as the original did: 400 with its error
when the global model is already trained on everyone's current ratings,
else ``{"success": true}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from tagrate_common.protos import trainer_pb2, users_pb2
from tagrate_common.validation import ALL_USERS

from .. import params
from ..auth import AdminOnly, AdminOnlyChanging, AnyCaller
from ..deps import DatasetDep, SettingsDep, TrainerDep
from ..errors import ErrorBody, error_responses
from ..schemas.models import FullDatasetCreated, FullDatasetState, TrainingAction
from ..uploads.openapi import multipart_body, text_property
from .training import ForceQuery, _post_fields, trainer_status

router = APIRouter(tags=["training"], dependencies=[Depends(params.no_repeated_query)])

_TRAIN_SUMMARY = "Start training the global model on every user's ratings (as /trainuser?user=all)"
_TRAIN_ERRORS = error_responses(400, 409, 503, 504)


async def _train_all(trainer: TrainerDep, force: str | None) -> TrainingAction:
    request = trainer_pb2.TrainUserRequest(user=ALL_USERS, force=params.boolean(force, "force"))
    reply = await trainer.stub.TrainUser(request)
    return TrainingAction(success=True, status=trainer_status(reply.status))


@router.get(
    "/trainall",
    dependencies=[AdminOnlyChanging],
    summary=_TRAIN_SUMMARY,
    status_code=202,
    response_model=TrainingAction,
    responses=_TRAIN_ERRORS,
)
async def train_all(trainer: TrainerDep, force: ForceQuery = None) -> TrainingAction:
    return await _train_all(trainer, force)


@router.post(
    "/trainall",
    dependencies=[AdminOnly],
    summary=_TRAIN_SUMMARY,
    status_code=202,
    response_model=TrainingAction,
    responses=_TRAIN_ERRORS,
    openapi_extra=multipart_body({"force": text_property("`true` trains even when up to date.", "false")}, []),
)
async def train_all_post(request: Request, settings: SettingsDep, trainer: TrainerDep) -> TrainingAction:
    fields = await _post_fields(request, settings)
    return await _train_all(trainer, fields.get("force"))


async def _full_dataset_valid(dataset: DatasetDep) -> bool:
    info = await dataset.stub.users.GetUser(users_pb2.GetUserRequest(user=ALL_USERS))
    return info.HasField("trained_snapshot_id") and info.trained_snapshot_id == info.snapshot_id


@router.get(
    "/verifyfulldataset",
    dependencies=[AnyCaller],
    summary="Whether the global model is trained on everyone's current ratings",
    response_model=FullDatasetState,
    responses=error_responses(503, 504),
)
async def verify_full_dataset(dataset: DatasetDep) -> FullDatasetState:
    return FullDatasetState(valid=await _full_dataset_valid(dataset))


@router.get(
    "/createfulldataset",
    dependencies=[AnyCaller],
    summary="The original's dataset step before /trainall: nothing to build here (the global model trains "
    "from the live ratings)",
    description='400 `{"error": "Full dataset already up-to-date"}` when the global model is trained on '
    'everyone\'s current ratings (as the original answered), else `{"success": true}`.',
    response_model=FullDatasetCreated,
    responses={
        **error_responses(503, 504),
        400: {"model": ErrorBody, "description": "The global model is already up to date."},
    },
)
async def create_full_dataset(dataset: DatasetDep) -> FullDatasetCreated | JSONResponse:
    if await _full_dataset_valid(dataset):
        return JSONResponse(
            {"error": "Full dataset already up-to-date", "code": "full_dataset_up_to_date"}, status_code=400
        )
    return FullDatasetCreated(success=True)
