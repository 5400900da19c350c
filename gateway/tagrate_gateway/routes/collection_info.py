"""Collection management's read-only endpoints, beside the changing ones in
:mod:`.collection` (whose parameter types they share): /gettags, /getstats
(plus the trainer's status), /getimageneighbours."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from tagrate_common.errors import DeadlineExceeded, Unavailable
from tagrate_common.protos import library_pb2, tags_pb2, trainer_pb2, users_pb2
from tagrate_common.timestamps import optional_api_text
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter

from .. import params
from ..auth import ActsAs
from ..deps import DatasetDep, TrainerDep
from ..errors import error_responses
from ..schemas import Neighbour
from ..schemas.collection import (
    ImageNeighbours,
    StatsModel,
    StatsTrainer,
    TagCounts,
    UserStats,
)
from .collection import FilenameQuery, ImageQuery, UserQuery

log = logging.getLogger("tagrate_gateway.collection")

router = APIRouter(tags=["collection"], dependencies=[Depends(params.no_repeated_query)])

# /getstats asks the trainer whether a training runs; a trainer that is down
# or slow must not hold the statistics for the trainer's whole deadline.
STATS_TRAINER_TIMEOUT_SECONDS = 2.0


# ---- /gettags ----


@router.get(
    "/gettags",
    dependencies=[ActsAs],
    summary="The tags on stored images, with counts",
    response_model=TagCounts,
    responses=error_responses(400, 404, 503, 504),
)
async def get_tags(
    dataset: DatasetDep,
    prefix: Annotated[str | None, Query(description="Only tags starting with this (case-insensitive).")] = None,
    contains: Annotated[
        str | None,
        Query(description="Only tags holding this anywhere (case-insensitive; spaces match `_`)."),
    ] = None,
    user: Annotated[str | None, Query(description="Only count this user's rated images.")] = None,
    limit: Annotated[
        str | None, Query(description=f"Most tags returned, 1-{params.MAX_TAG_LIST} (default: all).")
    ] = None,
) -> TagCounts:
    who = params.user(user) if user is not None and user.strip() != "" else ""
    most = params.tag_list_limit(limit)
    reply = await dataset.stub.tags.ListTags(
        tags_pb2.ListTagsRequest(
            prefix=(prefix or "").strip(), user=who, limit=most or 0, contains=(contains or "").strip()
        )
    )
    return TagCounts(model=reply.model or None, tags=list(reply.tags), counts=list(reply.counts))


# ---- /getstats ----


def _progress(fraction: float) -> str:
    """The original's progress: a percentage string its clients print verbatim."""
    return f"{max(0.0, min(1.0, fraction)) * 100:.2f}%"


async def _training(trainer: TrainerDep) -> StatsTrainer | None:
    """The running training, or None when none runs. A trainer that cannot
    be asked (down, slow, not configured) is also None, logged: statistics
    come from the dataset service and stay available without it."""
    if not trainer.target:
        return None  # no trainer in this deployment: nothing to report, nothing to warn about
    try:
        status = await trainer.stub.GetStatus(trainer_pb2.GetStatusRequest(), timeout=STATS_TRAINER_TIMEOUT_SECONDS)
    except (Unavailable, DeadlineExceeded) as exc:
        log.warning("/getstats without the trainer's status: %s", exc.message)
        return None
    if not status.is_training:
        return None
    return StatsTrainer(
        is_training=True,
        current_user=status.current_user if status.HasField("current_user") else None,
        progress=_progress(status.progress),
    )


@router.get(
    "/getstats",
    dependencies=[ActsAs],
    summary="A user's rating statistics and model freshness",
    description="`trainer` is null unless a training runs, and also when the trainer service cannot be asked "
    "(the rest still answers; the gateway logs it).",
    response_model=UserStats,
    responses=error_responses(400, 404, 503, 504),
)
async def get_stats(dataset: DatasetDep, trainer: TrainerDep, user: UserQuery = None) -> UserStats:
    name = params.user(user)
    # Both at once: the trainer's answer costs no extra latency.
    training_task = asyncio.ensure_future(_training(trainer))
    try:
        reply = await dataset.stub.users.GetStats(users_pb2.GetStatsRequest(user=name))
    except BaseException:
        training_task.cancel()
        raise
    training = await training_task
    model = None
    if reply.HasField("model"):
        model = StatsModel(
            version=reply.model.version,
            trained_at=optional_api_text(reply.model, "trained_at"),
            trained_on_ratings=reply.model.trained_on_ratings,
            metrics=dict(sorted(reply.model.metrics.items())),
        )
    return UserStats(
        user=reply.user or name,
        image_count=reply.image_count,
        rating_distribution=list(reply.rating_distribution),
        RaterNNP_up_to_date=reply.personal_up_to_date,
        RaterNN_up_to_date=reply.global_up_to_date,
        trainer=training,
        model=model,
    )


# ---- /getimageneighbours ----


def _neighbour(reply: library_pb2.GetImageNeighboursResponse, side: str) -> Neighbour:
    if not reply.HasField(side):
        return Neighbour(image=None, rating=None)
    item: library_pb2.Neighbour = getattr(reply, side)
    return Neighbour(image=item.image, rating=item.rating if item.HasField("rating") else None)


@router.get(
    "/getimageneighbours",
    dependencies=[ActsAs],
    summary="Where an image stands in a user's listing, and the images before and after it",
    description="The list is the one /getuserdata returns for the same `user`, `filters`, `sort` and `rated`; "
    "404 when the image is not in it.",
    response_model=ImageNeighbours,
    responses=error_responses(400, 404, 503, 504),
)
async def get_image_neighbours(
    dataset: DatasetDep,
    image: ImageQuery = None,
    filename: FilenameQuery = None,
    user: UserQuery = None,
    filters: Annotated[str | None, Query(description="As /getuserdata.")] = None,
    sort: Annotated[str | None, Query(description="As /getuserdata.")] = None,
    rated: Annotated[str | None, Query(description="As /getuserdata.")] = None,
) -> ImageNeighbours:
    name = params.image(image, filename)
    who = params.user(user)
    tag_filter = TagFilter.parse(filters)
    request = library_pb2.GetImageNeighboursRequest(
        image=name,
        user=who,
        include_tags=tag_filter.include,
        exclude_tags=tag_filter.exclude,
        sort=SortOrder.parse(sort).to_proto(),
        rated=RatedFilter.parse(rated).to_proto(),
    )
    reply = await dataset.stub.library.GetImageNeighbours(request)
    return ImageNeighbours(
        image=reply.image or name,
        position=reply.position,
        max_image=reply.max_image,
        prev_image=_neighbour(reply, "prev"),
        next_image=_neighbour(reply, "next"),
    )
