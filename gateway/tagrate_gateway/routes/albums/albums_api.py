"""The album API beyond the original (/albums: list, create, read, rename,
delete, add images, remove an image, move an image)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import Response

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import albums_pb2
from tagrate_common.timestamps import api_text, to_timestamp

from ... import auth, params
from ...auth import ActsAs
from ...bodies import BodyFields, post_fields
from ...deps import DatasetDep, SettingsDep
from ...schemas.albums import AddedAlbumImages, AlbumInfo, AlbumList, AlbumPage, CreatedAlbum, DeletedAlbum
from ...schemas.common import serialised
from ...uploads.openapi import multipart_body, text_property
from .shared import (
    ERRORS,
    ID_RE,
    AlbumId,
    FiltersQuery,
    ImagePath,
    LimitQuery,
    PageQuery,
    album_id,
    albums_router,
    caller,
    image_list,
    paged,
    parse_tags,
)

router = albums_router()


def _info(album: albums_pb2.Album) -> dict[str, Any]:
    return {
        "id": album.id,
        "name": album.name,
        "user": album.user,
        "created_at": api_text(album.created_at),
        "image_count": album.image_count,
        "cover": album.cover if album.HasField("cover") else None,
    }


@router.get(
    "/albums",
    dependencies=[ActsAs],
    summary="Albums, newest first: a user's (a user token: its own), or with an admin token and no `user` everyone's",
    response_model=AlbumList,
    responses=ERRORS,
)
async def list_albums(
    dataset: DatasetDep,
    user: Annotated[str | None, Query(description="Whose albums; a user token's own when left out.")] = None,
    page: PageQuery = None,
    limit: LimitQuery = None,
) -> AlbumList:
    who = auth.scoped_user(user)
    owner = validation.user_name(who) if who is not None and who.strip() != "" else ""
    page_number, page_size = params.page(page), params.limit(limit)
    reply = await dataset.stub.albums.ListAlbums(
        albums_pb2.ListAlbumsRequest(owner=owner, page=page_number or 0, limit=page_size or 0)
    )
    body = {"albums": [_info(item.album) for item in reply.albums], "total": reply.total}
    return AlbumList.model_validate(paged(body, page_number, reply.limit, reply.total))


def created_at(value: str | None) -> datetime | None:
    """An ISO 8601 time (``2024-05-01T12:00:00Z``; no zone: UTC) from 1970
    up to a day from now, or None when not given."""
    if value is None or value.strip() == "":
        return None
    problem = InvalidArgument(
        f"'created_at' must be an ISO 8601 time such as 2024-05-01T12:00:00Z, got {value[:40]!r}", "invalid_created_at"
    )
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise problem from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    if not datetime(1970, 1, 1, tzinfo=UTC) <= when <= datetime.now(UTC) + timedelta(days=1):
        raise problem
    return when


_ALBUM_FIELDS = {
    "user": text_property("The owner (a user token: itself, the default)."),
    "name": text_property("The album's name, at most 200 characters.", ""),
    "images": text_property("Comma-separated image names in album order (stored names or uploaded filenames).", ""),
    "created_at": text_property("When it was made (imports keep the original's); default now.", ""),
    "source": text_property("An import's key for the album: an album the owner has under it is answered instead.", ""),
}


def _json_body(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """A form body that may also come as a JSON object of the same fields."""
    body = multipart_body(fields, required)
    schema = {"type": "object", "properties": fields, "required": required}
    body["requestBody"]["content"]["application/json"] = {"schema": schema}
    body["requestBody"]["content"]["application/x-www-form-urlencoded"] = {"schema": schema}
    return body


@router.post(
    "/albums",
    dependencies=[ActsAs],
    summary="Create an album (201); with a `source` the owner already has, that album (200, created false)",
    status_code=201,
    response_model=CreatedAlbum,
    responses={
        **ERRORS,
        200: {"model": CreatedAlbum, "description": "The album the owner already had under `source`."},
    },
    openapi_extra=_json_body(_ALBUM_FIELDS, []),
)
async def create_album(request: Request, settings: SettingsDep, dataset: DatasetDep) -> Response:
    fields = await post_fields(request, settings, accept_json=True)
    owner = params.user(fields.get("user"))
    images = fields.get("images")
    names = image_list(images, "images") if images is not None and images.strip() != "" else []
    when = created_at(fields.get("created_at"))
    reply = await dataset.stub.albums.CreateAlbum(
        albums_pb2.CreateAlbumRequest(
            owner=owner,
            name=fields.get("name") or "",
            images=names,
            created_at=to_timestamp(when),
            source=fields.get("source") or "",
        )
    )
    return serialised({**_info(reply.album), "created": reply.created}, 201 if reply.created else 200)


@router.get(
    "/albums/{id}",
    dependencies=[ActsAs],
    summary="An album and (a page of) its images in album order",
    response_model=AlbumPage,
    responses=ERRORS,
)
async def get_album(
    request: Request,
    dataset: DatasetDep,
    id: AlbumId,
    filters: FiltersQuery = None,
    page: Annotated[str | None, Query(description="1-based page; without it every image.")] = None,
    limit: Annotated[str | None, Query(description="Images per page (default 60).")] = None,
) -> Response:
    number = album_id(id)
    tag_filter = parse_tags(filters)
    page_number, page_size = params.page(page), params.limit(limit)
    reply = await dataset.stub.albums.GetAlbum(
        albums_pb2.GetAlbumRequest(
            id=number,
            caller=caller(request),
            page=page_number or 0,
            limit=page_size or 0,
            include_tags=tag_filter.include,
            exclude_tags=tag_filter.exclude,
        )
    )
    images = [
        {
            "image": image.image,
            "image_id": image.image_id,
            "position": image.position,
            "width": image.width,
            "height": image.height,
            "rating": image.rating if image.HasField("rating") else None,
            "source": image.source or None,
        }
        for image in reply.images
    ]
    body = {**_info(reply.album), "images": images, "total": reply.total}
    return serialised(paged(body, page_number, reply.limit, reply.total))


async def _fields(request: Request, settings: SettingsDep) -> BodyFields:
    return await post_fields(request, settings, accept_json=True)


@router.patch(
    "/albums/{id}",
    dependencies=[ActsAs],
    summary="Rename an album",
    response_model=AlbumInfo,
    responses=ERRORS,
    openapi_extra=_json_body(
        {"name": text_property('The new name ("" removes it), at most 200 characters.')}, ["name"]
    ),
)
async def rename_album(request: Request, settings: SettingsDep, dataset: DatasetDep, id: AlbumId) -> AlbumInfo:
    number = album_id(id)
    fields = await _fields(request, settings)
    name = fields.get("name")
    if name is None:
        raise validation.missing("name")
    reply = await dataset.stub.albums.UpdateAlbum(
        albums_pb2.UpdateAlbumRequest(id=number, caller=caller(request), name=name)
    )
    return AlbumInfo.model_validate(_info(reply.album))


@router.delete(
    "/albums/{id}",
    dependencies=[ActsAs],
    summary="Delete an album (its images stay stored)",
    response_model=DeletedAlbum,
    responses=ERRORS,
)
async def delete_album(request: Request, dataset: DatasetDep, id: AlbumId) -> DeletedAlbum:
    number = album_id(id)
    reply = await dataset.stub.albums.DeleteAlbum(albums_pb2.DeleteAlbumRequest(id=number, caller=caller(request)))
    return DeletedAlbum(success=True, id=reply.id, images=reply.images)


def _position(value: str | None, required: bool) -> int:
    if value is None or value.strip() == "":
        if required:
            raise validation.missing("position")
        return 0
    text = value.strip()
    if not ID_RE.fullmatch(text) or int(text) < 1:
        raise InvalidArgument(f"'position' must be a whole number from 1 up, got {value[:40]!r}", "invalid_position")
    return int(text)


@router.post(
    "/albums/{id}/images",
    dependencies=[ActsAs],
    summary="Add images to an album (at the end, or from `position`); those already in it stay where they are",
    response_model=AddedAlbumImages,
    responses=ERRORS,
    openapi_extra=_json_body(
        {
            "images": text_property("Comma-separated image names (stored names or uploaded filenames)."),
            "position": text_property("1-based place of the first new image; default the end.", ""),
        },
        ["images"],
    ),
)
async def add_album_images(
    request: Request, settings: SettingsDep, dataset: DatasetDep, id: AlbumId
) -> AddedAlbumImages:
    number = album_id(id)
    fields = await _fields(request, settings)
    names = image_list(fields.get("images"), "images")
    position = _position(fields.get("position"), required=False)
    reply = await dataset.stub.albums.AddAlbumImages(
        albums_pb2.AddAlbumImagesRequest(id=number, caller=caller(request), images=names, position=position)
    )
    return AddedAlbumImages.model_validate({"album": _info(reply.album), "added": list(reply.added)})


@router.delete(
    "/albums/{id}/images/{image}",
    dependencies=[ActsAs],
    summary="Take an image out of an album (it stays stored)",
    response_model=AlbumInfo,
    responses=ERRORS,
)
async def remove_album_image(request: Request, dataset: DatasetDep, id: AlbumId, image: ImagePath) -> AlbumInfo:
    number = album_id(id)
    name = validation.image_name(image)
    reply = await dataset.stub.albums.RemoveAlbumImage(
        albums_pb2.RemoveAlbumImageRequest(id=number, caller=caller(request), image=name)
    )
    return AlbumInfo.model_validate(_info(reply.album))


@router.patch(
    "/albums/{id}/images/{image}",
    dependencies=[ActsAs],
    summary="Move an image to another place in the album (1-based `position`; past the end: last)",
    response_model=AlbumInfo,
    responses=ERRORS,
    openapi_extra=_json_body({"position": text_property("The 1-based place to move the image to.", "1")}, ["position"]),
)
async def move_album_image(
    request: Request, settings: SettingsDep, dataset: DatasetDep, id: AlbumId, image: ImagePath
) -> AlbumInfo:
    number = album_id(id)
    name = validation.image_name(image)
    fields = await _fields(request, settings)
    position = _position(fields.get("position"), required=True)
    reply = await dataset.stub.albums.MoveAlbumImage(
        albums_pb2.MoveAlbumImageRequest(id=number, caller=caller(request), image=name, position=position)
    )
    return AlbumInfo.model_validate(_info(reply.album))
