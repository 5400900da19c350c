"""The original's montage posts, as its chat bot and clients call them
(/createmontagepost, /getmontageposts, /getmontagepost,
/getmontagepostneighbours, with its shapes): albums by another name."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from tagrate_common.protos import albums_pb2
from tagrate_common.timestamps import api_text, optional_api_text

from ... import params
from ...auth import ActsAs
from ...bodies import post_fields
from ...deps import DatasetDep, SettingsDep
from ...schemas.albums import CreatedMontagePost, MontagePostNeighbours, MontagePostReply, MontagePosts
from ...schemas.common import serialised
from ...uploads.openapi import multipart_body, text_property
from .shared import (
    ERRORS,
    FiltersQuery,
    IdQuery,
    LimitQuery,
    PageQuery,
    UserQuery,
    album_id,
    albums_router,
    caller,
    image_list,
    paged,
    parse_tags,
)

router = albums_router()


_SANKAKU_ID_RE = re.compile(r"[0-9]{1,15}")


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
    responses=ERRORS,
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
    responses=ERRORS,
)
async def get_montage_posts(
    dataset: DatasetDep,
    user: UserQuery = None,
    filters: FiltersQuery = None,
    page: PageQuery = None,
    limit: LimitQuery = None,
) -> Response:
    name = params.user(user)
    tag_filter = parse_tags(filters)
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
    return serialised(paged(body, page_number, reply.limit, reply.total))


@router.get(
    "/getmontagepost",
    dependencies=[ActsAs],
    summary="One montage post (album) with each image's tags and dimensions",
    response_model=MontagePostReply,
    responses=ERRORS,
)
async def get_montage_post(
    request: Request, dataset: DatasetDep, id: IdQuery = None, filters: FiltersQuery = None
) -> Response:
    number = album_id(id)
    tag_filter = parse_tags(filters)
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
    responses=ERRORS,
)
async def get_montage_post_neighbours(
    dataset: DatasetDep, id: IdQuery = None, user: UserQuery = None, filters: FiltersQuery = None
) -> MontagePostNeighbours:
    number = album_id(id)
    name = params.user(user)
    parse_tags(filters)  # checked, so a malformed filter is still a 400
    reply = await dataset.stub.albums.GetAlbumNeighbours(albums_pb2.GetAlbumNeighboursRequest(id=number, owner=name))
    return MontagePostNeighbours.model_validate(
        {
            "position": reply.position,
            "max_montagepost": reply.total,
            "next_montagepost": _ref(reply, "next"),
            "prev_montagepost": _ref(reply, "prev"),
        }
    )
