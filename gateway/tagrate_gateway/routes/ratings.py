"""Predicted ratings of uploads or stored images, for one user or every
user: /rate and /ratebulk (rater service; stored images' bytes from the
dataset service).

A stored image is named by the form or query field ``image`` (alias
``filename``), repeated on /ratebulk; the gateway fetches its bytes with the
dataset's GetImage and rates them exactly like an upload of the same bytes,
so the answer equals the stored prediction (``predicted`` in /getuserdata)
for the same model. One request either uploads files or names stored
images: both at once is a 400 (which of them to rate would be a guess)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument, PayloadTooLarge, Unavailable
from tagrate_common.protos import common_pb2, images_pb2, rater_pb2

from .. import params
from ..auth import ActsAs
from ..bodies import post_fields
from ..config import GatewaySettings
from ..deps import DatasetDep, RaterDep, SettingsDep
from ..errors import error_responses
from ..schemas.models import EveryUserBulkRatings, EveryUserRating, UserBulkRatings, UserRating
from ..uploads.chunks import ChunkPlan, call_in_chunks
from ..uploads.files import check_images
from ..uploads.multipart import MultipartForm, read_form
from ..uploads.openapi import file_property, files_property, multipart_body, text_property

router = APIRouter(tags=["rating"], dependencies=[Depends(params.no_repeated_query)])

_ERRORS = error_responses(400, 404, 409, 413, 415, 503, 504)
# The fields that name a stored image (``filename``: the older clients' alias).
_NAME_FIELDS = ("image", "filename")
_MULTIPART = "multipart/form-data"


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


class _Request:
    """The text fields of a rating request (query string first, then the
    body's fields, repeats kept in order) and its uploaded files, if any."""

    def __init__(self, fields: list[tuple[str, str]], form: MultipartForm | None) -> None:
        self.fields = fields
        self.form = form

    def field(self, name: str) -> str | None:
        return params.single(self.fields, name)

    def names(self) -> list[tuple[str, str]]:
        """Every (field, value) naming a stored image, in the order given."""
        return [(key, value) for key, value in self.fields if key in _NAME_FIELDS]

    def has_files(self) -> bool:
        return bool(self.form is not None and self.form.files)


@asynccontextmanager
async def _read_request(request: Request, settings: GatewaySettings, max_files: int) -> AsyncIterator[_Request]:
    """``async with _read_request(...) as given``: the request's fields and,
    for a multipart body, its uploads (their spools freed when the block
    ends). Names alone may come in a query string or an urlencoded body; a
    JSON or other body is refused as for any form route."""
    if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() == _MULTIPART:
        async with read_form(request, settings, max_files=max_files) as form:
            yield _Request(list(request.query_params.multi_items()) + form.fields, form)
    else:
        fields = await post_fields(request, settings)
        yield _Request([(key, str(value)) for key, value in fields.pairs], None)


def _one_name(given: _Request) -> str | None:
    """The one stored image /rate names, None when none is named."""
    pairs = given.names()
    if not pairs:
        return None
    for name in _NAME_FIELDS:
        params.single(pairs, name)  # each field at most once on /rate
    return params.image(given.field("image"), given.field("filename"))


def _names(given: _Request) -> list[str]:
    """Every stored image /ratebulk names, in the order given."""
    return [validation.image_name(value, key) for key, value in given.names()]


def _form(given: _Request) -> MultipartForm:
    """The multipart form the uploads come in; without one (a query string
    or urlencoded body that names no image) the image is missing."""
    if given.form is None:
        raise validation.missing("image")
    return given.form


def _not_both(given: _Request) -> None:
    if given.has_files() and given.names():
        raise InvalidArgument(
            "send either uploaded images or stored image names ('image'/'filename'), not both in one request",
            "conflicting_parameters",
        )


async def _stored_image(dataset: DatasetDep, name: str) -> common_pb2.ImageFile:
    """The stored bytes of ``name`` as an upload (404 naming it when there
    is no such image)."""
    reply = await dataset.stub.images.GetImage(images_pb2.GetImageRequest(image=name))
    return common_pb2.ImageFile(data=reply.data, filename=name)


async def _rate_stored(
    names: Sequence[str], settings: GatewaySettings, dataset: DatasetDep, rater: RaterDep, user: str
) -> list[rater_pb2.RateResponse]:
    """Rate calls over the stored images ``names`` in chunks of at most
    ``bulk_chunk_files`` images, at most ``bulk_calls_in_flight`` chunks at
    once (each fetched only when its call starts); the answers in order."""
    size = settings.bulk_chunk_files
    limit = asyncio.Semaphore(settings.bulk_calls_in_flight)

    async def run(chunk: Sequence[str]) -> rater_pb2.RateResponse:
        async with limit:
            images = list(await asyncio.gather(*(_stored_image(dataset, name) for name in chunk)))
            return await rater.stub.Rate(_rate_request(images, user))

    tasks = [asyncio.ensure_future(run(names[i : i + size])) for i in range(0, len(names), size)]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@router.post(
    "/rate",
    dependencies=[ActsAs],
    summary="Predict how much a user (or every user) will like an image",
    description='One user: `{"user": U, "rating": 0.71, "model": "personal"|"global", "model_version": ...}`. '
    '`all`: `{"ratings": [[U, 0.71], ...], "models": {U: "personal"|"global"}}` for every user with a usable '
    "model, sorted by name. A user's personal model serves when it exists, else the global model; 409 when "
    "neither exists yet. Instead of an upload, `image=NAME` (form or query field, alias `filename`) rates a "
    "stored image (404 naming it when there is none); an upload and a name together are a 400.",
    response_model=UserRating | EveryUserRating,
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "image": file_property("The image (JPEG, PNG, WebP, GIF or BMP), or a stored image's name as text."),
            "user": text_property("A user name, or `all` for every user.", "alice"),
        },
        ["image", "user"],
    ),
)
async def rate(
    request: Request, settings: SettingsDep, rater: RaterDep, dataset: DatasetDep
) -> UserRating | EveryUserRating:
    async with _read_request(request, settings, max_files=1) as given:
        _not_both(given)
        user = params.user_or_all(given.field("user"))
        name = _one_name(given)
        if name is not None:
            [reply] = await _rate_stored([name], settings, dataset, rater, user)
        else:
            upload = _form(given).file("image")
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
    "fails the request with a message naming it by position (1-based) and filename. Instead of uploads, "
    "`image=NAME` repeated (form or query fields, alias `filename`) rates stored images in the order named "
    "(404 naming the first unknown one); uploads and names together are a 400.",
    response_model=UserBulkRatings | EveryUserBulkRatings,
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "images": files_property("The images, each JPEG, PNG, WebP, GIF or BMP."),
            "image": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Stored image names, instead of `images` (repeat the field).",
            },
            "user": text_property("A user name, or `all` (the default) for every user.", "all"),
        },
        [],
    ),
)
async def rate_bulk(
    request: Request, settings: SettingsDep, rater: RaterDep, dataset: DatasetDep
) -> UserBulkRatings | EveryUserBulkRatings:
    async with _read_request(request, settings, max_files=settings.max_bulk_files) as given:
        _not_both(given)
        user = params.user_or_all(given.field("user"), absent=validation.ALL_USERS)
        names = _names(given)
        if names:
            if len(names) > settings.max_bulk_files:
                raise PayloadTooLarge(
                    f"{len(names)} images named; at most {settings.max_bulk_files} per request", "too_many_files"
                )
            count = len(names)
            replies = await _rate_stored(names, settings, dataset, rater, user)
        else:
            uploads = _form(given).files_required("images")
            check_images(uploads, settings.image_limits)
            count = len(uploads)
            replies = await call_in_chunks(
                uploads, ChunkPlan.from_settings(settings), lambda images: rater.stub.Rate(_rate_request(images, user))
            )
    ratings = _ratings_by_user(replies)
    if user == validation.ALL_USERS:
        return EveryUserBulkRatings(
            users=list(ratings),
            ratings=[[_rating(r[i]) for r in ratings.values()] for i in range(count)],
        )
    [(one, values)] = ratings.items()
    return UserBulkRatings(user=one, ratings=[_rating(r) for r in values])
