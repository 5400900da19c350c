"""The taste loop (issue 26): /getratenext (what to rate next) and /explain
(why the model predicts what it does), from the dataset service's
TasteLoopService on the vectors of the rater's current extractor; /getmodels
and /usemodel (the model history: the rater's kept head versions)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from tagrate_common import validation
from tagrate_common.errors import Conflict, InvalidArgument
from tagrate_common.protos import rater_pb2, tasteloop_pb2, training_data_pb2
from tagrate_common.timestamps import optional_api_text
from tagrate_common.userdata import TagFilter

from .. import params
from ..auth import ActsAs
from ..deps import DatasetDep, RaterDep
from ..errors import error_responses

router = APIRouter(tags=["taste loop"], dependencies=[Depends(params.no_repeated_query)])

RATE_NEXT_DEFAULT, RATE_NEXT_MAX = 20, 100
NEIGHBOURS_DEFAULT, NEIGHBOURS_MAX = 8, 50
MAX_FILTER_TAGS = 16
_INTEGER = re.compile(r"[0-9]{1,4}")


class RateNextImage(BaseModel):
    image: str = Field(description="A stored image the user has not rated.")
    predicted: float | None = Field(description="The serving model's stored prediction; null when there is none.")
    reason: str = Field(description="Why it is worth rating, in words.")


class RateNext(BaseModel):
    """Unrated images whose ratings would teach the user's model the most, best first."""

    user: str
    strategy: str = Field(
        description="`typical-and-variance`: the most typical image of each of the largest groups of alike "
        "images that hold nothing the user rated (TypiClust), and from 20 ratings on half of the queue the images "
        "whose ratings would most narrow the model's uncertainty over the rest (docs/taste-loop.md says why)."
    )
    model_version: str | None = Field(description="The model version the queue was made for; null without a model.")
    images: list[RateNextImage]


class Neighbour(BaseModel):
    image: str = Field(description="An image the user rated.")
    rating: float = Field(description="The user's rating of it.")
    similarity: float = Field(description="Cosine similarity of the images' feature vectors, -1 to 1.")


class TagEffect(BaseModel):
    tag: str = Field(description="One of the image's tags.")
    effect: float = Field(
        description="Mean prediction of the user's images with this tag minus the mean over all their images."
    )
    images: int = Field(description="How many of the user's scored images carry the tag.")


class Explanation(BaseModel):
    """Why the user's model predicts what it does for the image."""

    image: str
    predicted: float | None = Field(description="The serving model's stored prediction; null until scored.")
    model_version: str
    neighbours: list[Neighbour] = Field(description="The user's rated images most similar to it, most similar first.")
    tags: list[TagEffect] = Field(description="The image's tags, the ones that move predictions most first.")


class ModelVersion(BaseModel):
    version: str
    kind: str = Field(description="`linear` or `mlp`.")
    trained_at: str | None = Field(description="When it was published (UTC).")
    trained_on_ratings: int | None = Field(description="How many ratings it was trained on.")
    metrics: dict[str, float] = Field(description="Its held-out figures (`spearman`, `mae`, ...).")
    serving: bool = Field(description="Whether this version serves the user's predictions now.")


class ModelHistory(BaseModel):
    """Every kept version of the user's personal model, newest first."""

    user: str
    versions: list[ModelVersion]


class ModelChosen(BaseModel):
    success: bool = Field(description="Always true (a failure is an error body).")
    user: str
    version: str = Field(description="The version that serves now; predictions are being rescored with it.")


def _ratings_in(snapshot_id: str) -> int | None:
    """The ratings count a user's snapshot id ends with."""
    last = snapshot_id.rsplit(":", 1)[-1]
    return int(last) if snapshot_id.count(":") == 2 and last.isdigit() else None


def _version(meta: rater_pb2.HeadMetadata, serving: bool) -> ModelVersion:
    return ModelVersion(
        version=meta.version,
        kind=meta.kind,
        trained_at=optional_api_text(meta, "created_at"),
        trained_on_ratings=_ratings_in(meta.snapshot_id),
        metrics=dict(meta.metrics),
        serving=serving,
    )


def _limit(value: str | None, default: int, most: int) -> int:
    if value is None or value.strip() == "":
        return default
    text = value.strip()
    if not _INTEGER.fullmatch(text) or not 1 <= int(text) <= most:
        raise InvalidArgument(f"'limit' must be a whole number from 1 to {most}, got {value[:20]!r}", "invalid_limit")
    return int(text)


async def _extractor(rater: RaterDep) -> str:
    reply = await rater.stub.GetExtractorInfo(rater_pb2.GetExtractorInfoRequest())
    return str(reply.extractor_id)


@router.get(
    "/getratenext",
    dependencies=[ActsAs],
    summary="Unrated images whose ratings would teach the user's model the most",
    response_model=RateNext,
    responses=error_responses(400, 404, 503, 504),
)
async def get_rate_next(
    dataset: DatasetDep,
    rater: RaterDep,
    user: Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`).")] = None,
    limit: Annotated[
        str | None, Query(description=f"How many, 1-{RATE_NEXT_MAX} (default {RATE_NEXT_DEFAULT}).")
    ] = None,
    filters: Annotated[
        str | None,
        Query(
            description="As on /getuserdata: comma-separated tags the images must all have (`-tag` excludes; "
            "`manual:`/`taught:`/`model:` tags, `rating:`/`predicted:` comparisons and `~` groups too)."
        ),
    ] = None,
) -> Any:
    name = params.user(user)
    count = _limit(limit, RATE_NEXT_DEFAULT, RATE_NEXT_MAX)
    tag_filter = TagFilter.parse(filters).checked(MAX_FILTER_TAGS, 200)
    extractor = await _extractor(rater)
    reply = await dataset.stub.tasteloop.GetRateNext(
        tasteloop_pb2.GetRateNextRequest(
            user=name,
            extractor_id=extractor,
            limit=count,
            include_tags=tag_filter.include,
            exclude_tags=tag_filter.exclude,
        )
    )
    return RateNext(
        user=reply.user,
        strategy=reply.strategy,
        model_version=reply.model_version or None,
        images=[
            RateNextImage(
                image=item.image, predicted=item.predicted if item.HasField("predicted") else None, reason=item.reason
            )
            for item in reply.images
        ],
    )


@router.get(
    "/explain",
    dependencies=[ActsAs],
    summary="Why the user's model predicts what it does for an image",
    response_model=Explanation,
    responses=error_responses(400, 404, 409, 503, 504),
)
async def explain(
    dataset: DatasetDep,
    rater: RaterDep,
    user: Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`).")] = None,
    image: Annotated[str | None, params.required_query("A stored image name.")] = None,
    limit: Annotated[
        str | None, Query(description=f"Neighbours, 1-{NEIGHBOURS_MAX} (default {NEIGHBOURS_DEFAULT}).")
    ] = None,
) -> Any:
    name = params.user(user)
    stored = params.image(image)
    count = _limit(limit, NEIGHBOURS_DEFAULT, NEIGHBOURS_MAX)
    extractor = await _extractor(rater)
    reply = await dataset.stub.tasteloop.ExplainImage(
        tasteloop_pb2.ExplainImageRequest(user=name, image=stored, extractor_id=extractor, limit=count)
    )
    if not reply.model_version:
        raise Conflict(f"'{name}' has no model yet: rate at least 10 images and train one", "no_model")
    body: dict[str, Any] = {
        "image": reply.image,
        "predicted": reply.predicted if reply.HasField("predicted") else None,
        "model_version": reply.model_version,
        "neighbours": [{"image": n.image, "rating": n.rating, "similarity": n.similarity} for n in reply.neighbours],
        "tags": [{"tag": t.tag, "effect": t.effect, "images": t.images} for t in reply.tags],
    }
    return Explanation.model_validate(body)


@router.get(
    "/getmodels",
    dependencies=[ActsAs],
    summary="Every kept version of the user's model, with its figures and which one serves",
    response_model=ModelHistory,
    responses=error_responses(400, 503, 504),
)
async def get_models(
    rater: RaterDep,
    user: Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`).")] = None,
) -> Any:
    name = params.user(user)
    reply = await rater.stub.ListHeadVersions(rater_pb2.ListHeadVersionsRequest(user=name))
    return ModelHistory(user=name, versions=[_version(v.metadata, v.serving) for v in reply.versions])


@router.post(
    "/usemodel",
    dependencies=[ActsAs],
    summary="Serve a kept older version of the user's model (predictions rescore)",
    response_model=ModelChosen,
    responses=error_responses(400, 404, 503, 504),
)
async def use_model(
    dataset: DatasetDep,
    rater: RaterDep,
    user: Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`).")] = None,
    version: Annotated[str | None, params.required_query("A version /getmodels lists.")] = None,
) -> Any:
    name = params.user(user)
    if version is None or not version.strip():
        raise validation.missing("version")
    reply = await rater.stub.UseHeadVersion(rater_pb2.UseHeadVersionRequest(user=name, version=version.strip()))
    meta = reply.metadata
    # The dataset service now records this version as the user's model: its
    # predictions are rescored with it, and /getuserdata and /verifydatasets follow.
    await dataset.stub.training.RecordTrainedSnapshot(
        training_data_pb2.RecordTrainedSnapshotRequest(
            user=name, snapshot_id=meta.snapshot_id, model_version=meta.version, metrics=dict(meta.metrics)
        )
    )
    return ModelChosen(success=True, user=name, version=meta.version)
