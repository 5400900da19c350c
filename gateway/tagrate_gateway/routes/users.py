"""A user's dataset: /getuserdata and /addrating (dataset service)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tagrate_common.protos import dataset_pb2
from tagrate_common.timestamps import optional_api_text

from .. import params
from ..deps import DatasetDep, SettingsDep
from ..errors import error_responses
from ..uploads import file_property, multipart_body, read_form, text_property

router = APIRouter(tags=["users"], dependencies=[Depends(params.no_repeated_query)])

_SORT = {
    "date-desc": dataset_pb2.SORT_ORDER_DATE_DESC,
    "date-asc": dataset_pb2.SORT_ORDER_DATE_ASC,
    "rating-desc": dataset_pb2.SORT_ORDER_RATING_DESC,
    "rating-asc": dataset_pb2.SORT_ORDER_RATING_ASC,
    "name-asc": dataset_pb2.SORT_ORDER_NAME_ASC,
    "name-desc": dataset_pb2.SORT_ORDER_NAME_DESC,
}
_RATED = {
    "yes": dataset_pb2.RATED_FILTER_YES,
    "no": dataset_pb2.RATED_FILTER_NO,
    "all": dataset_pb2.RATED_FILTER_ALL,
}


def _q(description: str) -> Any:
    return Query(description=description)


@router.get(
    "/getuserdata",
    summary="A user's dataset, filtered, sorted and paged",
    responses=error_responses(400, 404, 503, 504),
)
async def get_user_data(
    dataset: DatasetDep,
    user: Annotated[str | None, _q("User name (1-64 of `[A-Za-z0-9_.-]`).")] = None,
    filters: Annotated[
        str | None, _q("Comma-separated tags the images must all have; `-tag` excludes images with that tag.")
    ] = None,
    page: Annotated[str | None, _q("1-based page number; without it the whole dataset is returned.")] = None,
    limit: Annotated[str | None, _q("Page size, 1-1000 (default 60); used with `page`.")] = None,
    sort: Annotated[
        str | None,
        _q("`date-desc` (default), `date-asc`, `rating-desc`, `rating-asc`, `name-asc`, `name-desc`."),
    ] = None,
    rated: Annotated[
        str | None, _q("`yes` (default): rated images; `no`: images the user has not rated; `all`.")
    ] = None,
) -> dict[str, Any]:
    name = params.user(user)
    tag_filter = params.filters(filters)
    page_number = params.page(page)
    page_size = params.limit(limit)
    request = dataset_pb2.GetUserDataRequest(
        user=name,
        include_tags=tag_filter.include,
        exclude_tags=tag_filter.exclude,
        sort=_SORT[params.sort(sort)],
        rated=_RATED[params.rated(rated)],
        page=page_number or 0,
        limit=page_size if page_number else 0,
    )
    reply = await dataset.call("GetUserData", request)
    body: dict[str, Any] = {
        "user": reply.user or name,
        "images": [
            {
                "image": item.image,
                "rating": item.rating if item.HasField("rating") else None,
                "rated_at": optional_api_text(item, "rated_at") if item.HasField("rating") else None,
            }
            for item in reply.images
        ],
        "total": reply.total,
    }
    if page_number:
        body.update(page=page_number, limit=page_size, max_page=max(1, math.ceil(reply.total / page_size)))
    return body


@router.post(
    "/addrating",
    summary="Add or change a user's rating of an image",
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
async def add_rating(request: Request, settings: SettingsDep, dataset: DatasetDep) -> dict[str, Any]:
    async with read_form(request, settings, max_files=1) as form:
        name = params.user(form.field("user"))
        value = params.rating(form.field("rating"))
        upload = form.file("image")
        upload.check_image(settings.image_limits)
        reply = await dataset.call(
            "AddRating", dataset_pb2.AddRatingRequest(image=upload.image_file(), user=name, rating=value)
        )
    return {
        "image": reply.image,
        "user": reply.user,
        "rating": reply.rating,
        "new_image": reply.new_image,
        "new_user": reply.new_user,
    }
