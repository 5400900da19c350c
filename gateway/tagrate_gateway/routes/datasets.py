"""Dataset state: /verifydatasets, /updatetags and /retryfailed (dataset service).

/updatetags changes state but is GET in the original table, so it accepts
POST too, with its parameter in the form (or the query string).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from tagrate_common.protos import tags_pb2, work_pb2
from tagrate_common.timestamps import optional_api_text

from .. import params
from ..auth import AdminOnly, AdminOnlyChanging, AnyCaller, private_to
from ..deps import DatasetDep, SettingsDep
from ..errors import error_responses
from ..schemas.datasets import DatasetsState, FailedWork, RetriedWork, UpdatedTags, UserDatasetState, WorkCounts
from ..uploads.openapi import multipart_body, text_property
from .training import _post_fields as post_fields

# UpdateTags tags every untagged image before it answers (the tagger's
# throughput decides how long: thousands of images take minutes), so its
# deadline covers a whole catch-up rather than one quick call. The dataset
# service stops between batches once the caller is gone; what was stored
# stays stored and the background worker tags the rest anyway.
UPDATE_TAGS_TIMEOUT_SECONDS = 3600.0

router = APIRouter(tags=["datasets"], dependencies=[Depends(params.no_repeated_query)])


@router.get(
    "/verifydatasets",
    dependencies=[AnyCaller],
    summary="Whether every user's model is trained on their current ratings",
    response_model=DatasetsState,
    responses=error_responses(503, 504),
)
async def verify_datasets(dataset: DatasetDep) -> DatasetsState:
    reply = await dataset.stub.work.VerifyDatasets(work_pb2.VerifyDatasetsRequest())
    # A user token sees only its own user's entry (others' rating counts and
    # activity are theirs); `valid` then speaks for that user's model.
    own = [state for state in reply.users if not private_to(state.user)]
    return DatasetsState(
        valid=reply.valid if len(own) == len(reply.users) else all(state.model_up_to_date for state in own),
        users=[
            UserDatasetState(
                user=state.user,
                ratings=state.ratings,
                model_up_to_date=state.model_up_to_date,
                trained_on_ratings=state.trained_on_ratings if state.HasField("trained_on_ratings") else None,
                trained_at=optional_api_text(state, "trained_at"),
                last_rating_at=optional_api_text(state, "last_rating_at"),
            )
            for state in own
        ],
        untagged_images=reply.untagged_images,
        pending_predictions=reply.pending_predictions,
        # Beyond the contract's fields: background work still owed per kind,
        # and (the first few) images parked as failed, with why.
        work={work.kind: WorkCounts(pending=work.pending, failed=work.failed) for work in reply.work},
        failed_work=[
            FailedWork(image=item.image, kind=item.kind, error=item.error, attempts=item.attempts)
            for item in reply.failed_work
        ],
    )


_RETRY_FORM = multipart_body({"kind": text_property("`tag` or `embed`; every kind when left out.", "")}, [])
_RETRY_FORM["requestBody"]["required"] = False  # a POST without a body retries every kind


@router.post(
    "/retryfailed",
    dependencies=[AdminOnly],
    summary="Queue background work parked as failed (tagging, feature vectors) again",
    response_model=RetriedWork,
    responses=error_responses(400, 503, 504),
    openapi_extra=_RETRY_FORM,
)
async def retry_failed(request: Request, settings: SettingsDep, dataset: DatasetDep) -> RetriedWork:
    fields = await post_fields(request, settings)
    reply = await dataset.stub.work.RetryFailedWork(work_pb2.RetryFailedWorkRequest(kind=fields.get("kind") or ""))
    return RetriedWork(retried=reply.retried)


FullQuery = Annotated[
    str | None, Query(description="`true` re-tags every image, not only those the current model has not tagged.")
]
_UPDATE_TAGS_FORM = multipart_body(
    {"full": text_property("`true` re-tags every image, not only the untagged ones.", "false")}, []
)
_UPDATE_TAGS_FORM["requestBody"]["required"] = False  # a POST without a body tags the untagged images
_UPDATE_TAGS_SUMMARY = "Tag every image the current tagger model has not tagged yet"
_UPDATE_TAGS_ERRORS = error_responses(400, 503, 504)


async def _update_tags(dataset: DatasetDep, full: str | None) -> UpdatedTags:
    request = tags_pb2.UpdateTagsRequest(full=params.boolean(full, "full"))
    reply = await dataset.stub.tags.UpdateTags(request, timeout=UPDATE_TAGS_TIMEOUT_SECONDS)
    return UpdatedTags(updated_images_count=reply.updated_images_count, model=reply.model_id)


@router.get(
    "/updatetags",
    dependencies=[AdminOnlyChanging],
    summary=_UPDATE_TAGS_SUMMARY,
    response_model=UpdatedTags,
    responses=_UPDATE_TAGS_ERRORS,
)
async def update_tags(dataset: DatasetDep, full: FullQuery = None) -> UpdatedTags:
    return await _update_tags(dataset, full)


@router.post(
    "/updatetags",
    dependencies=[AdminOnly],
    summary=_UPDATE_TAGS_SUMMARY,
    response_model=UpdatedTags,
    responses=_UPDATE_TAGS_ERRORS,
    openapi_extra=_UPDATE_TAGS_FORM,
)
async def update_tags_post(request: Request, settings: SettingsDep, dataset: DatasetDep) -> UpdatedTags:
    fields = await post_fields(request, settings)
    return await _update_tags(dataset, fields.get("full"))
