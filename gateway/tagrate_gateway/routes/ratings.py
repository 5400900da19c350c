"""Predicted ratings of uploads, for one user or every user: /rate and
/ratebulk (rater service)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from tagrate_common import validation
from tagrate_common.protos import common_pb2, rater_pb2

from .. import params
from ..deps import RaterDep, SettingsDep
from ..errors import error_responses
from ..uploads import (
    UploadedFile,
    check_images,
    file_property,
    files_property,
    multipart_body,
    read_form,
    text_property,
)

router = APIRouter(tags=["rating"])

_ERRORS = error_responses(400, 404, 409, 413, 415, 503, 504)


def _rating(value: float) -> float:
    """A float32 rating as JSON: six significant digits drop the float32
    noise (0.71 rather than 0.7099999785423279)."""
    return float(f"{value:.6g}")


def _rate_request(uploads: list[UploadedFile], user: str) -> rater_pb2.RateRequest:
    return rater_pb2.RateRequest(
        images=[common_pb2.ImageFile(data=u.data, filename=u.filename) for u in uploads], user=user
    )


@router.post(
    "/rate",
    summary="Predict how much a user (or every user) will like an image",
    description='One user: `{"user": U, "rating": 0.71, "model": "personal"|"global", "model_version": ...}`. '
    '`all`: `{"ratings": [[U, 0.71], ...], "models": {U: "personal"|"global"}}` for every user with a usable '
    "model, sorted by name. A user's personal model serves when it exists, else the global model; 409 when "
    "neither exists yet.",
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "image": file_property("The image (JPEG, PNG, WebP, GIF or BMP)."),
            "user": text_property("A user name, or `all` for every user.", "alice"),
        },
        ["image", "user"],
    ),
)
async def rate(request: Request, settings: SettingsDep, rater: RaterDep) -> dict[str, Any]:
    form = await read_form(request, settings, max_files=1)
    user = params.user_or_all(form.field("user"))
    upload = form.file("image")
    upload.check_image(settings.image_limits)
    reply = await rater.call("Rate", _rate_request([upload], user))
    if user == validation.ALL_USERS:
        return {
            "ratings": [[u.user, _rating(u.ratings[0])] for u in reply.users],
            "models": {u.user: u.model for u in reply.users},
        }
    [one] = reply.users
    return {"user": one.user, "rating": _rating(one.ratings[0]), "model": one.model, "model_version": one.model_version}


@router.post(
    "/ratebulk",
    summary="Predict ratings of several images for a user (or every user)",
    description='One user: `{"user": U, "ratings": [0.71, ...]}`, one per image in upload order. `all` (the '
    'default): `{"users": [U1, U2, ...], "ratings": [[r_U1, r_U2, ...], ...]}`, one row per image. A bad file '
    "fails the request with a message naming it by position (1-based) and filename.",
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "images": files_property("The images, each JPEG, PNG, WebP, GIF or BMP."),
            "user": text_property("A user name, or `all` (the default) for every user.", "all"),
        },
        ["images"],
    ),
)
async def rate_bulk(request: Request, settings: SettingsDep, rater: RaterDep) -> dict[str, Any]:
    form = await read_form(request, settings, max_files=settings.max_bulk_files)
    given = form.field("user")
    user = validation.ALL_USERS if given is None or given.strip() == "" else params.user_or_all(given)
    uploads = form.files_required("images")
    check_images(uploads, settings.image_limits)
    reply = await rater.call("Rate", _rate_request(uploads, user))
    if user == validation.ALL_USERS:
        return {
            "users": [u.user for u in reply.users],
            "ratings": [[_rating(u.ratings[i]) for u in reply.users] for i in range(len(uploads))],
        }
    [one] = reply.users
    return {"user": one.user, "ratings": [_rating(r) for r in one.ratings]}
