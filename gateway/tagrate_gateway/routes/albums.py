"""Albums (dataset service): the original's montage posts as its chat bot
and clients call them (/createmontagepost, /getmontageposts,
/getmontagepost, /getmontagepostneighbours, with its shapes) and the album
API beyond it (/albums: list, create, read, rename, delete, add, remove,
move).

A user token owns its albums: listing and creating act as its user (as
every ``user`` parameter does), and an album of another user is a 403
(checked by the dataset service against the caller handed to it). An admin
sees and changes every album.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import albums_pb2
from tagrate_common.timestamps import api_text, optional_api_text, to_timestamp
from tagrate_common.userdata import TagFilter

from .. import auth, params
from ..auth import ActsAs
from ..bodies import BodyFields, post_fields
from ..deps import DatasetDep, SettingsDep
from ..errors import error_responses
from ..schemas import (
    AddedAlbumImages,
    AlbumInfo,
    AlbumList,
    AlbumPage,
    CreatedAlbum,
    CreatedMontagePost,
    DeletedAlbum,
    MontagePostNeighbours,
    MontagePostReply,
    MontagePosts,
    serialised,
)
from ..uploads import multipart_body, text_property

router = APIRouter(tags=["albums"], dependencies=[Depends(params.no_repeated_query)])

_ID_RE = re.compile(r"[0-9]{1,18}")
_SANKAKU_ID_RE = re.compile(r"[0-9]{1,15}")
_ERRORS = error_responses(400, 404, 503, 504)

UserQuery = Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`; numeric ids too).")]
IdQuery = Annotated[str | None, params.required_query("The montage post's (album's) id.")]
FiltersQuery = Annotated[
    str | None, Query(description="Comma-separated tags; keeps only the images having them inside each album.")
]
PageQuery = Annotated[str | None, Query(description="1-based page; without it every album is returned.")]
LimitQuery = Annotated[str | None, Query(description="Albums per page (default 15).")]
AlbumId = Annotated[str, Path(description="The album's id.")]
ImagePath = Annotated[str, Path(description="A stored image name, `<sha256>.<ext>`.")]


def album_id(value: str | None, param: str = "id") -> int:
    """An album id: a whole number from 1 up."""
    if value is None or value.strip() == "":
        raise validation.missing(param)
    text = value.strip()
    if not _ID_RE.fullmatch(text) or int(text) < 1:
        raise InvalidArgument(
            f"'{param}' must be an album id (a whole number from 1 up), got {value[:40]!r}", "invalid_id"
        )
    return int(text)


def image_list(value: str | None, param: str) -> list[str]:
    """Comma-separated image names (the original's ``filenames``), blanks dropped."""
    names = [name.strip() for name in (value or "").split(",") if name.strip()]
    if not names:
        raise validation.missing(param)
    return names


def caller(request: Request) -> str:
    """The user the request acts as, "" for an admin (who may touch every album)."""
    who: auth.Caller | None = getattr(request.state, "caller", None)
    return "" if who is None or who.admin else who.user or ""


def _max_page(total: int, limit: int) -> int:
    return max(1, math.ceil(total / limit))


def _paged(body: dict[str, Any], page: int | None, limit: int, total: int) -> dict[str, Any]:
    if page:
        body.update(page=page, limit=limit, max_page=_max_page(total, limit))
    return body


def _tags(filters: str | None) -> TagFilter:
    return TagFilter.parse(filters)


# ---- the original's montage posts ----


def _sankaku_id(source: str) -> int | None:
    return int(source) if _SANKAKU_ID_RE.fullmatch(source) else None


def _montage_post(item: albums_pb2.AlbumWithImages) -> dict[str, Any]:
    album = item.album
    return {
        "id": album.id,
        "created_at": api_text(album.created_at),
        "images": [
            {
                "image_id": image.image_id,
                "filename": image.image,
                "meta": {"width": image.width, "height": image.height, "aspect_ratio": image.width / image.height},
                "sankaku_id": _sankaku_id(image.source),
                "tags": list(image.tags),
                "source": image.source or None,
            }
            for image in item.images
        ],
        "name": album.name,
        "user": album.user,
    }


_CREATE_FIELDS = {
    "user": text_property("The owner: a user name or numeric id (an existing user)."),
    "filenames": text_property(
        "Comma-separated image names, in album order: stored names, or the filenames they were uploaded under."
    ),
}


@router.post(
    "/createmontagepost",
    dependencies=[ActsAs],
    summary="Record a montage post: a new album of the user's holding these images in this order",
    description="The original's chat bot sends `user=<numeric id>` and `filenames=NAME,NAME,...` (form fields); "
    "a name is a stored image name or the filename an image was uploaded under (/addimage), the newest such "
    "image. 404 names the first unknown image, or an unknown user.",
    response_model=CreatedMontagePost,
    responses=_ERRORS,
    openapi_extra=multipart_body(_CREATE_FIELDS, ["user", "filenames"]),
)
async def create_montage_post(request: Request, settings: SettingsDep, dataset: DatasetDep) -> CreatedMontagePost:
    fields = await post_fields(request, settings, accept_json=True)
    user = params.user(fields.get("user"))
    names = image_list(fields.get("filenames"), "filenames")
    reply = await dataset.stub.albums.CreateAlbum(albums_pb2.CreateAlbumRequest(owner=user, images=names))
    return CreatedMontagePost(montagepost_id=reply.album.id, image_count=reply.album.image_count)


@router.get(
    "/getmontageposts",
    dependencies=[ActsAs],
    summary="A user's montage posts (albums), newest first, with each image's tags and dimensions",
    response_model=MontagePosts,
    responses=_ERRORS,
)
async def get_montage_posts(
    dataset: DatasetDep,
    user: UserQuery = None,
    filters: FiltersQuery = None,
    page: PageQuery = None,
    limit: LimitQuery = None,
) -> Response:
    name = params.user(user)
    tag_filter = _tags(filters)
    page_number = params.page(page)
    page_size = params.limit(limit)
    request = albums_pb2.ListAlbumsRequest(
        owner=name,
        page=page_number or 0,
        limit=page_size or 0,
        with_images=True,
        include_tags=tag_filter.include,
        exclude_tags=tag_filter.exclude,
    )
    reply = await dataset.stub.albums.ListAlbums(request)
    body = {"montageposts": [_montage_post(item) for item in reply.albums], "total": reply.total}
    return serialised(_paged(body, page_number, reply.limit, reply.total))


@router.get(
    "/getmontagepost",
    dependencies=[ActsAs],
    summary="One montage post (album) with each image's tags and dimensions",
    response_model=MontagePostReply,
    responses=_ERRORS,
)
async def get_montage_post(
    request: Request, dataset: DatasetDep, id: IdQuery = None, filters: FiltersQuery = None
) -> Response:
    number = album_id(id)
    tag_filter = _tags(filters)
    reply = await dataset.stub.albums.GetAlbum(
        albums_pb2.GetAlbumRequest(
            id=number,
            caller=caller(request),
            with_tags=True,
            include_tags=tag_filter.include,
            exclude_tags=tag_filter.exclude,
        )
    )
    post = _montage_post(albums_pb2.AlbumWithImages(album=reply.album, images=reply.images))
    return serialised({"montagepost": post})


def _ref(reply: albums_pb2.GetAlbumNeighboursResponse, side: str) -> dict[str, Any]:
    if not reply.HasField(side):
        return {"id": None, "created_at": None}
    ref: albums_pb2.AlbumRef = getattr(reply, side)
    return {"id": ref.id, "created_at": optional_api_text(ref, "created_at")}


@router.get(
    "/getmontagepostneighbours",
    dependencies=[ActsAs],
    summary="Where a montage post stands in its user's newest-first list, and the posts either side",
    description="404 when the album is not one of the user's. `filters` is accepted as the original did; "
    "albums are never filtered out, so it does not change the answer.",
    response_model=MontagePostNeighbours,
    responses=_ERRORS,
)
async def get_montage_post_neighbours(
    dataset: DatasetDep, id: IdQuery = None, user: UserQuery = None, filters: FiltersQuery = None
) -> MontagePostNeighbours:
    number = album_id(id)
    name = params.user(user)
    _tags(filters)  # checked, so a malformed filter is still a 400
    reply = await dataset.stub.albums.GetAlbumNeighbours(albums_pb2.GetAlbumNeighboursRequest(id=number, owner=name))
    return MontagePostNeighbours.model_validate(
        {
            "position": reply.position,
            "max_montagepost": reply.total,
            "next_montagepost": _ref(reply, "next"),
            "prev_montagepost": _ref(reply, "prev"),
        }
    )


# ---- albums ----


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
    responses=_ERRORS,
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
    return AlbumList.model_validate(_paged(body, page_number, reply.limit, reply.total))


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
        **_ERRORS,
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
    responses=_ERRORS,
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
    tag_filter = _tags(filters)
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
    return serialised(_paged(body, page_number, reply.limit, reply.total))


async def _fields(request: Request, settings: SettingsDep) -> BodyFields:
    return await post_fields(request, settings, accept_json=True)


@router.patch(
    "/albums/{id}",
    dependencies=[ActsAs],
    summary="Rename an album",
    response_model=AlbumInfo,
    responses=_ERRORS,
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
    responses=_ERRORS,
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
    if not _ID_RE.fullmatch(text) or int(text) < 1:
        raise InvalidArgument(f"'position' must be a whole number from 1 up, got {value[:40]!r}", "invalid_position")
    return int(text)


@router.post(
    "/albums/{id}/images",
    dependencies=[ActsAs],
    summary="Add images to an album (at the end, or from `position`); those already in it stay where they are",
    response_model=AddedAlbumImages,
    responses=_ERRORS,
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
    responses=_ERRORS,
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
    responses=_ERRORS,
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
