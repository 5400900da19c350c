"""Training: /trainuser, /trainerstatus, /stoptraining (trainer service).

/trainuser and /stoptraining change state but are GET in the original
table, so they accept POST too. A POST's parameters come from its form
fields (multipart/form-data as the table says, or urlencoded), else from
its query string, so a POST without a body works like the GET.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Query, Request

from tagrate_common.errors import InvalidArgument, PayloadTooLarge
from tagrate_common.protos import trainer_pb2
from tagrate_common.timestamps import optional_api_text
from tagrate_common.validation import ALL_USERS

from .. import params
from ..auth import ActsAs, ActsAsChanging, AdminOnly, AdminOnlyChanging, AnyCaller, private_to
from ..deps import SettingsDep, TrainerDep
from ..errors import error_responses
from ..schemas.models import JobSummary, TrainerStatus, TrainerStatusReply, TrainingAction
from ..uploads.multipart import read_form
from ..uploads.openapi import multipart_body, text_property

router = APIRouter(tags=["training"], dependencies=[Depends(params.no_repeated_query)])

UserQuery = Annotated[
    str | None,
    params.required_query("User name, or `all` for the global model trained on every user's ratings."),
]
ForceQuery = Annotated[
    str | None, Query(description="`true` trains even when the model is already trained on the current ratings.")
]
_TRAIN_FORM = multipart_body(
    {
        "user": text_property("User name, or `all` for the global model."),
        "force": text_property("`true` trains even when the model is up to date.", "false"),
    },
    ["user"],
)


async def _urlencoded_fields(request: Request, limit: int) -> list[tuple[str, str]]:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the form is larger than {limit} bytes", "field_too_large")
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise InvalidArgument("the form is not valid utf-8", "invalid_encoding") from None


async def _post_fields(request: Request, settings: SettingsDep) -> params.Fields:
    """A POST's parameters: its form fields (multipart/form-data, or the
    urlencoded form ``curl -d`` sends) and its query string, all a POST
    without a body has. A parameter in both, or twice in either, is given
    twice: :meth:`params.Fields.get` answers 400 for it."""
    pairs = list(request.query_params.multi_items())
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        pairs += await _urlencoded_fields(request, settings.max_form_field_bytes)
    elif content_type or request.headers.get("content-length", "0") != "0":
        async with read_form(request, settings, max_files=0) as form:
            pairs += form.fields
    return params.Fields(pairs)


def job_summary(summary: trainer_pb2.JobSummary) -> JobSummary:
    return JobSummary(
        job_id=summary.job_id,
        user=summary.user,
        outcome=summary.outcome,
        metrics=dict(sorted(summary.metrics.items())),
        error=summary.error or None,
        started_at=optional_api_text(summary, "started_at"),
        finished_at=optional_api_text(summary, "finished_at"),
    )


def trainer_status(status: trainer_pb2.TrainerStatus) -> TrainerStatus:
    """The ``status`` object every training endpoint answers with. A user
    token sees whose job runs, its loss and metrics, and the last job only
    when they are its own user's (that the trainer is busy stays visible)."""
    current = status.current_user if status.HasField("current_user") else None
    # The global model (user "all") is everyone's: its job stays visible.
    hidden = current is not None and current != ALL_USERS and private_to(current)
    last_job = job_summary(status.last_job) if status.HasField("last_job") else None
    if last_job is not None and last_job.user != ALL_USERS and private_to(last_job.user):
        last_job = None
    return TrainerStatus(
        is_training=status.is_training,
        state=status.state,
        current_user=None if hidden else current,
        progress=status.progress,
        epoch=status.epoch,
        epochs=status.epochs,
        loss=status.loss if status.HasField("loss") and not hidden else None,
        metrics={} if hidden else dict(sorted(status.metrics.items())),
        started_at=optional_api_text(status, "started_at"),
        eta_seconds=status.eta_seconds if status.HasField("eta_seconds") else None,
        last_job=last_job,
    )


async def _train(trainer: TrainerDep, user: str | None, force: str | None) -> TrainingAction:
    request = trainer_pb2.TrainUserRequest(user=params.user_or_all(user), force=params.boolean(force, "force"))
    reply = await trainer.stub.TrainUser(request)
    return TrainingAction(success=True, status=trainer_status(reply.status))


_TRAIN_SUMMARY = "Start training a user's rating model in the background"
_TRAIN_ERRORS = error_responses(400, 404, 409, 503, 504)


@router.get(
    "/trainuser",
    dependencies=[ActsAsChanging],
    summary=_TRAIN_SUMMARY,
    status_code=202,
    response_model=TrainingAction,
    responses=_TRAIN_ERRORS,
)
async def train_user(trainer: TrainerDep, user: UserQuery = None, force: ForceQuery = None) -> TrainingAction:
    return await _train(trainer, user, force)


@router.post(
    "/trainuser",
    dependencies=[ActsAs],
    summary=_TRAIN_SUMMARY,
    status_code=202,
    response_model=TrainingAction,
    responses=_TRAIN_ERRORS,
    openapi_extra=_TRAIN_FORM,
)
async def train_user_post(request: Request, settings: SettingsDep, trainer: TrainerDep) -> TrainingAction:
    fields = await _post_fields(request, settings)
    return await _train(trainer, fields.get("user"), fields.get("force"))


@router.get(
    "/trainerstatus",
    dependencies=[AnyCaller],
    summary="The trainer's status",
    response_model=TrainerStatusReply,
    responses=error_responses(503, 504),
)
async def trainer_status_route(trainer: TrainerDep) -> TrainerStatusReply:
    reply = await trainer.stub.GetStatus(trainer_pb2.GetStatusRequest())
    return TrainerStatusReply(status=trainer_status(reply))


async def _stop(trainer: TrainerDep) -> TrainingAction:
    reply = await trainer.stub.StopTraining(trainer_pb2.StopTrainingRequest())
    return TrainingAction(success=True, status=trainer_status(reply.status))


_STOP_SUMMARY = "Stop the running training (nothing is published)"
_STOP_ERRORS = error_responses(409, 503, 504)


@router.get(
    "/stoptraining",
    dependencies=[AdminOnlyChanging],
    summary=_STOP_SUMMARY,
    response_model=TrainingAction,
    responses=_STOP_ERRORS,
)
async def stop_training(trainer: TrainerDep) -> TrainingAction:
    return await _stop(trainer)


@router.post(
    "/stoptraining",
    dependencies=[AdminOnly],
    summary=_STOP_SUMMARY,
    response_model=TrainingAction,
    responses=_STOP_ERRORS,
)
async def stop_training_post(trainer: TrainerDep) -> TrainingAction:
    return await _stop(trainer)
