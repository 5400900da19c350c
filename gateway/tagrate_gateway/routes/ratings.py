"""Predicted ratings of uploads, for one user or every user: /rate and
/ratebulk (rater service)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tagrate_common import validation
from tagrate_common.errors import Unavailable
from tagrate_common.protos import common_pb2, rater_pb2

from .. import params
from ..auth import ActsAs
from ..deps import RaterDep, SettingsDep
from ..errors import error_responses
from ..schemas import EveryUserBulkRatings, EveryUserRating, UserBulkRatings, UserRating
from ..uploads import (
    ChunkPlan,
    call_in_chunks,
    check_images,
    file_property,
    files_property,
    multipart_body,
    read_form,
    text_property,
)

router = APIRouter(tags=["rating"], dependencies=[Depends(params.no_repeated_query)])

_ERRORS = error_responses(400, 404, 409, 413, 415, 503, 504)


def _rating(value: float) -> float:
    """A float32 rating as JSON: six significant digits drop the float32
    noise (0.71 rather than 0.7099999785423279)."""
    return float(f"{value:.6g}")


def _rate_request(images: list[common_pb2.ImageFile], user: str) -> rater_pb2.RateRequest:
    return rater_pb2.RateRequest(images=images, user=user)


def _ratings_by_user(replies: list[rater_pb2.RateResponse]) -> dict[str, list[float]]:
    """Every user's ratings over the chunks of one upload, in upload order.
    503 when the set of users with a model changed between the chunks (a
    model was published meanwhile): a retry gets a consistent answer."""
    users = [u.user for u in replies[0].users] if replies else []
    merged: dict[str, list[float]] = {user: [] for user in users}
    for reply in replies:
        if [u.user for u in reply.users] != users:
            raise Unavailable(
                "the rater's set of user models changed while this upload was being rated; send it again",
                "model_changed",
            )
        for u in reply.users:
            merged[u.user] += u.ratings
    return merged


@router.post(
    "/rate",
    dependencies=[ActsAs],
    summary="Predict how much a user (or every user) will like an image",
    description='One user: `{"user": U, "rating": 0.71, "model": "personal"|"global", "model_version": ...}`. '
    '`all`: `{"ratings": [[U, 0.71], ...], "models": {U: "personal"|"global"}}` for every user with a usable '
    "model, sorted by name. A user's personal model serves when it exists, else the global model; 409 when "
    "neither exists yet.",
    response_model=UserRating | EveryUserRating,
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "image": file_property("The image (JPEG, PNG, WebP, GIF or BMP)."),
            "user": text_property("A user name, or `all` for every user.", "alice"),
        },
        ["image", "user"],
    ),
)
async def rate(request: Request, settings: SettingsDep, rater: RaterDep) -> UserRating | EveryUserRating:
    async with read_form(request, settings, max_files=1) as form:
        user = params.user_or_all(form.field("user"))
        upload = form.file("image")
        upload.check_image(settings.image_limits)
        reply = await rater.stub.Rate(_rate_request([upload.image_file()], user))
    if user == validation.ALL_USERS:
        return EveryUserRating(
            ratings=[(u.user, _rating(u.ratings[0])) for u in reply.users],
            models={u.user: u.model for u in reply.users},
        )
    [one] = reply.users
    return UserRating(user=one.user, rating=_rating(one.ratings[0]), model=one.model, model_version=one.model_version)


@router.post(
    "/ratebulk",
    dependencies=[ActsAs],
    summary="Predict ratings of several images for a user (or every user)",
    description='One user: `{"user": U, "ratings": [0.71, ...]}`, one per image in upload order. `all` (the '
    'default): `{"users": [U1, U2, ...], "ratings": [[r_U1, r_U2, ...], ...]}`, one row per image. A bad file '
    "fails the request with a message naming it by position (1-based) and filename.",
    response_model=UserBulkRatings | EveryUserBulkRatings,
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "images": files_property("The images, each JPEG, PNG, WebP, GIF or BMP."),
            "user": text_property("A user name, or `all` (the default) for every user.", "all"),
        },
        ["images"],
    ),
)
async def rate_bulk(request: Request, settings: SettingsDep, rater: RaterDep) -> UserBulkRatings | EveryUserBulkRatings:
    async with read_form(request, settings, max_files=settings.max_bulk_files) as form:
        given = form.field("user")
        user = params.user_or_all(given, absent=validation.ALL_USERS)
        uploads = form.files_required("images")
        check_images(uploads, settings.image_limits)
        replies = await call_in_chunks(
            uploads, ChunkPlan.from_settings(settings), lambda images: rater.stub.Rate(_rate_request(images, user))
        )
    ratings = _ratings_by_user(replies)
    if user == validation.ALL_USERS:
        return EveryUserBulkRatings(
            users=list(ratings),
            ratings=[[_rating(r[i]) for r in ratings.values()] for i in range(len(uploads))],
        )
    [(one, values)] = ratings.items()
    return UserBulkRatings(user=one, ratings=[_rating(r) for r in values])
