"""Collection management, the endpoints the original's web front end and chat
bot call beyond its endpoint table (dataset service): /updaterating,
/removerating, /deleteimage, /addimage. The read-only ones (/gettags,
/getstats, /getimageneighbours) are :mod:`.collection_info`; /getthumbnail
lives with /getimage in images.py.

/removerating and /deleteimage change state but the original's clients
call them with GET, so they accept POST too; a POST's parameters come from
its query string and its form (see :mod:`tagrate_gateway.bodies`).
/updaterating is POST only and also takes a JSON body, as the original's
web front end sends it.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import common_pb2, images_pb2, ratings_pb2

from .. import params
from ..auth import ActsAs, ActsAsChanging, AdminOnly, AdminOnlyChanging, AnyCaller
from ..bodies import BodyFields, post_fields
from ..deps import DatasetDep, SettingsDep
from ..errors import error_responses
from ..schemas.collection import (
    AddedBulkImage,
    AddedImage,
    AddedImages,
    DeletedImage,
    RemovedRating,
    UpdatedRating,
)
from ..uploads.chunks import ChunkPlan, call_in_chunks
from ..uploads.files import check_images
from ..uploads.multipart import read_form
from ..uploads.openapi import file_property, files_property, multipart_body, text_property

log = logging.getLogger("tagrate_gateway.collection")

router = APIRouter(tags=["collection"], dependencies=[Depends(params.no_repeated_query)])


UserQuery = Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`).")]
ImageQuery = Annotated[str | None, params.required_query("Stored image name, `<sha256>.<ext>`.")]
FilenameQuery = Annotated[str | None, Query(description="Alias of `image` (sent by the original's clients).")]
_USER = text_property("User name (1-64 of `[A-Za-z0-9_.-]`).")
_IMAGE = text_property("Stored image name, `<sha256>.<ext>` (`filename` is an alias).")


def _optional_body(properties: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """A form body that may be left out (its fields can come in the query string)."""
    body = multipart_body(properties, required)
    body["requestBody"]["required"] = False
    return body


# ---- /updaterating ----

_UPDATE_FIELDS = {"image": _IMAGE, "user": _USER, "rating": text_property("A number from 0 to 1.", "0.5")}
_UPDATE_BODY = multipart_body(_UPDATE_FIELDS, ["image", "user", "rating"])
_UPDATE_BODY["requestBody"]["content"]["application/json"] = {
    "schema": {
        "type": "object",
        "properties": {
            "image": {"type": "string", "description": "Stored image name (`filename` is an alias)."},
            "user": {"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "User name or numeric id."},
            "rating": {"anyOf": [{"type": "number"}, {"type": "string"}], "description": "0 to 1."},
        },
        "required": ["user", "rating"],
    }
}
_UPDATE_BODY["requestBody"]["content"]["application/x-www-form-urlencoded"] = {
    "schema": {"type": "object", "properties": _UPDATE_FIELDS, "required": ["image", "user", "rating"]}
}


@router.post(
    "/updaterating",
    dependencies=[ActsAs],
    summary="Set a user's rating of a stored image (no upload)",
    description='Form fields or a JSON body `{"image"|"filename", "user", "rating"}`; in JSON `user` may be '
    "an integer id and `rating` a number or a decimal string. A new user is created as by /addrating.",
    response_model=UpdatedRating,
    responses=error_responses(400, 404, 503, 504),
    openapi_extra=_UPDATE_BODY,
)
async def update_rating(request: Request, settings: SettingsDep, dataset: DatasetDep) -> UpdatedRating:
    fields = await post_fields(request, settings, accept_json=True)
    name = params.image(fields.get("image"), fields.get("filename"))
    user = params.user(fields.get("user"))
    value = params.rating(fields.value("rating"))
    reply = await dataset.stub.ratings.UpdateRating(
        ratings_pb2.UpdateRatingRequest(image=name, user=user, rating=value)
    )
    return UpdatedRating(
        success=True,
        image=reply.image,
        user=reply.user,
        rating=reply.rating,
        previous_rating=reply.previous_rating if reply.HasField("previous_rating") else None,
        new_user=reply.new_user,
    )


# ---- /removerating ----

_REMOVE_SUMMARY = "Remove a user's rating of an image (the image stays)"
_REMOVE_ERRORS = error_responses(400, 404, 503, 504)


async def _remove_rating(
    dataset: DatasetDep, user: str | None, image: str | None, filename: str | None
) -> RemovedRating:
    name = params.image(image, filename)
    who = params.user(user)
    reply = await dataset.stub.ratings.RemoveRating(ratings_pb2.RemoveRatingRequest(image=name, user=who))
    return RemovedRating(success=True, image=reply.image, user=reply.user, rating=reply.rating)


@router.get(
    "/removerating",
    dependencies=[ActsAsChanging],
    summary=_REMOVE_SUMMARY,
    response_model=RemovedRating,
    responses=_REMOVE_ERRORS,
)
async def remove_rating(
    dataset: DatasetDep, user: UserQuery = None, image: ImageQuery = None, filename: FilenameQuery = None
) -> RemovedRating:
    return await _remove_rating(dataset, user, image, filename)


@router.post(
    "/removerating",
    dependencies=[ActsAs],
    summary=_REMOVE_SUMMARY,
    response_model=RemovedRating,
    responses=_REMOVE_ERRORS,
    openapi_extra=_optional_body({"user": _USER, "image": _IMAGE}, ["user", "image"]),
)
async def remove_rating_post(request: Request, settings: SettingsDep, dataset: DatasetDep) -> RemovedRating:
    fields = await post_fields(request, settings)
    return await _remove_rating(dataset, fields.get("user"), fields.get("image"), fields.get("filename"))


# ---- /deleteimage ----

_DELETE_SUMMARY = "Delete a stored image with its tags, features and every rating of it"
_DELETE_ERRORS = error_responses(400, 404, 503, 504)


async def _delete_image(dataset: DatasetDep, image: str | None, filename: str | None) -> DeletedImage:
    name = params.image(image, filename)
    reply = await dataset.stub.images.DeleteImage(images_pb2.DeleteImageRequest(image=name))
    return DeletedImage(success=True, image=reply.image, ratings_removed=reply.ratings_removed)


@router.get(
    "/deleteimage",
    dependencies=[AdminOnlyChanging],
    summary=_DELETE_SUMMARY,
    response_model=DeletedImage,
    responses=_DELETE_ERRORS,
)
async def delete_image(dataset: DatasetDep, image: ImageQuery = None, filename: FilenameQuery = None) -> DeletedImage:
    return await _delete_image(dataset, image, filename)


@router.post(
    "/deleteimage",
    dependencies=[AdminOnly],
    summary=_DELETE_SUMMARY,
    response_model=DeletedImage,
    responses=_DELETE_ERRORS,
    openapi_extra=_optional_body({"image": _IMAGE}, ["image"]),
)
async def delete_image_post(request: Request, settings: SettingsDep, dataset: DatasetDep) -> DeletedImage:
    fields: BodyFields = await post_fields(request, settings)
    return await _delete_image(dataset, fields.get("image"), fields.get("filename"))


# ---- /addimage ----


@router.post(
    "/addimage",
    dependencies=[AnyCaller],
    summary="Store images without rating them",
    description="One file as `image`: `{success, filename, image, new_image}`; several as `images`: "
    "`{success, images: [{image, new_image}, ...]}` in upload order. They appear in every user's `rated=no` "
    "list and are tagged in the background. Bytes already stored are not an error (`new_image: false`).",
    response_model=AddedImage | AddedImages,
    responses=error_responses(400, 413, 415, 503, 504),
    openapi_extra=multipart_body(
        {
            "image": file_property("One image (JPEG, PNG, WebP, GIF or BMP)."),
            "images": files_property("Several images (instead of `image`)."),
            "source": text_property(
                f"Where the images came from (a URL or post id), at most {params.MAX_SOURCE_CHARS} characters."
            ),
            "sankaku_id": text_property("Alias of `source` (sent by the original's chat bot)."),
        },
        [],
    ),
)
async def add_image(request: Request, settings: SettingsDep, dataset: DatasetDep) -> AddedImage | AddedImages:
    async with read_form(request, settings, max_files=settings.max_bulk_files) as form:
        source = params.source(form.field("source"), form.field("sankaku_id"))
        single, bulk = form.files_named("image"), form.files_named("images")
        if single and bulk:
            raise InvalidArgument("send one file as 'image' or several as 'images', not both", "conflicting_parameters")
        if len(single) > 1:
            raise params.repeated("image")
        uploads = single or form.files_required("images")
        check_images(uploads, settings.image_limits)

        def store(images: list[common_pb2.ImageFile]) -> Any:
            return dataset.stub.images.AddImages(images_pb2.AddImagesRequest(images=images, source=source))

        replies = await call_in_chunks(uploads, ChunkPlan.from_settings(settings), store)
    added = [item for reply in replies for item in reply.images]
    if single:
        [one] = added
        return AddedImage(
            success=True, filename=one.image, image=one.image, new_image=one.new_image, near_duplicate_of=_near(one)
        )
    return AddedImages(
        success=True,
        images=[AddedBulkImage(image=i.image, new_image=i.new_image, near_duplicate_of=_near(i)) for i in added],
    )


def _near(added: images_pb2.AddedImage) -> str | None:
    return added.near_duplicate_of if added.HasField("near_duplicate_of") else None
