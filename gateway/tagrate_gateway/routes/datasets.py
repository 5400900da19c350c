"""Dataset state: /verifydatasets (dataset service)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tagrate_common.protos import dataset_pb2

from ..deps import DatasetDep
from ..errors import error_responses
from ..timestamps import optional_iso_utc

router = APIRouter(tags=["datasets"])


@router.get(
    "/verifydatasets",
    summary="Whether every user's model is trained on their current ratings",
    responses=error_responses(503, 504),
)
async def verify_datasets(dataset: DatasetDep) -> dict[str, Any]:
    reply = await dataset.call("VerifyDatasets", dataset_pb2.VerifyDatasetsRequest())
    return {
        "valid": reply.valid,
        "users": [
            {
                "user": state.user,
                "ratings": state.ratings,
                "model_up_to_date": state.model_up_to_date,
                "trained_on_ratings": state.trained_on_ratings if state.HasField("trained_on_ratings") else None,
                "trained_at": optional_iso_utc(state, "trained_at"),
                "last_rating_at": optional_iso_utc(state, "last_rating_at"),
            }
            for state in reply.users
        ],
        "untagged_images": reply.untagged_images,
    }
