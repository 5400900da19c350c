"""A user's dataset: /getuserdata and /addrating (dataset service)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from tagrate_common.protos import library_pb2, ratings_pb2
from tagrate_common.timestamps import optional_api_text
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter

from .. import params
from ..auth import ActsAs
from ..deps import DatasetDep, SettingsDep
from ..errors import error_responses
from ..schemas.common import serialised
from ..schemas.library import AddedRating, UserData
from ..uploads.multipart import read_form
from ..uploads.openapi import file_property, multipart_body, text_property

router = APIRouter(tags=["users"], dependencies=[Depends(params.no_repeated_query)])


def _q(description: str) -> Any:
    return Query(description=description)


@router.get(
    "/getuserdata",
    dependencies=[ActsAs],
    summary="A user's dataset, filtered, sorted and paged",
    response_model=UserData,
    responses=error_responses(400, 404, 503, 504),
)
async def get_user_data(
    dataset: DatasetDep,
    user: Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`).")] = None,
    filters: Annotated[
        str | None, _q("Comma-separated tags the images must all have; `-tag` excludes images with that tag.")
    ] = None,
    page: Annotated[str | None, _q("1-based page number; without it the whole dataset is returned.")] = None,
    limit: Annotated[
        str | None, _q("Page size, 1 to the dataset service's maximum (default 60, at most 1000); used with `page`.")
    ] = None,
    sort: Annotated[
        str | None,
        _q(", ".join(f"`{order}`" for order in SortOrder) + " (the first is the default; `filename-*` = `name-*`)."),
    ] = None,
    rated: Annotated[
        str | None, _q("`yes` (default): rated images; `no`: images the user has not rated; `all`.")
    ] = None,
) -> Response:
    name = params.user(user)
    tag_filter = TagFilter.parse(filters)
    page_number = params.page(page)
    page_size = params.limit(limit)
    request = library_pb2.GetUserDataRequest(
        user=name,
        include_tags=tag_filter.include,
        exclude_tags=tag_filter.exclude,
        sort=SortOrder.parse(sort).to_proto(),
        rated=RatedFilter.parse(rated).to_proto(),
        page=page_number or 0,
        limit=page_size or 0,  # 0: the dataset service's default
    )
    reply = await dataset.stub.library.GetUserData(request)
    body: dict[str, Any] = {
        "user": reply.user or name,
        "images": [_image(item) for item in reply.images],
        "total": reply.total,
    }
    if page_number:
        body.update(page=page_number, limit=reply.limit, max_page=max(1, math.ceil(reply.total / reply.limit)))
    return serialised(body)  # up to 1000 items: see schemas.common.serialised


def _image(item: library_pb2.UserImage) -> dict[str, Any]:
    """One row of /getuserdata (up to 1000 a request: each field is looked up once)."""
    rated = item.HasField("rating")
    return {
        "image": item.image,
        "rating": item.rating if rated else None,
        "rated_at": optional_api_text(item, "rated_at") if rated else None,
        "predicted": item.predicted if item.HasField("predicted") else None,
    }


@router.post(
    "/addrating",
    dependencies=[ActsAs],
    summary="Add or change a user's rating of an image",
    response_model=AddedRating,
    responses=error_responses(400, 413, 415, 503, 504),
    openapi_extra=multipart_body(
        {
            "image": file_property("The image (JPEG, PNG, WebP, GIF or BMP)."),
            "user": text_property("User name (1-64 of `[A-Za-z0-9_.-]`); created on first rating."),
            "rating": text_property("A number from 0 to 1.", "0.5"),
        },
        ["image", "user", "rating"],
    ),
)
async def add_rating(request: Request, settings: SettingsDep, dataset: DatasetDep) -> AddedRating:
    async with read_form(request, settings, max_files=1) as form:
        name = params.user(form.field("user"))
        value = params.rating(form.field("rating"))
        upload = form.file("image")
        upload.check_image(settings.image_limits)
        reply = await dataset.stub.ratings.AddRating(
            ratings_pb2.AddRatingRequest(image=upload.image_file(), user=name, rating=value)
        )
    return AddedRating(
        image=reply.image,
        user=reply.user,
        rating=reply.rating,
        new_image=reply.new_image,
        new_user=reply.new_user,
        near_duplicate_of=reply.near_duplicate_of if reply.HasField("near_duplicate_of") else None,
    )
