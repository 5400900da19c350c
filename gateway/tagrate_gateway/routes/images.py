"""Stored images, their thumbnails and their tags: /getimage, /getthumbnail,
/getimagetags (dataset service)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response

from tagrate_common.protos import images_pb2, owned_tags_pb2, tags_pb2

from .. import params
from ..auth import AnyCaller
from ..deps import DatasetDep
from ..errors import error_responses
from ..schemas import ImageTags, TagScore
from ..tag_schemas import ImageTagDetail
from .owned_tags import image_tag_detail

router = APIRouter(tags=["images"], dependencies=[Depends(params.no_repeated_query)])

ImageQuery = Annotated[str | None, Query(description="Stored image name, `<sha256>.<ext>`.")]
FilenameQuery = Annotated[str | None, Query(description="Alias of `image` (sent by older clients).")]
# The stored bytes (and each resized version) never change under a name.
IMMUTABLE = "public, max-age=31536000, immutable"
# Stored bytes are what an uploader sent: a browser must never sniff them
# into HTML or run anything in them, even opened directly (issue 23, #10).
STORED_FILE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; sandbox",
}
_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "The client's copy (If-None-Match) is current."},
    **error_responses(400, 404, 503, 504),
}
IfNoneMatchHeader = Annotated[str | None, Header(description="An ETag from an earlier answer.")]


def image_response(reply: images_pb2.GetImageResponse) -> Response:
    """The bytes of ``reply`` with a strong ETag and immutable caching, or a
    304 when the service found the client's If-None-Match current."""
    headers = {"ETag": f'"{reply.etag}"', "Cache-Control": IMMUTABLE, **STORED_FILE_HEADERS}
    if reply.not_modified:
        return Response(status_code=304, headers=headers)
    media_type = reply.content_type if reply.content_type.startswith("image/") else "application/octet-stream"
    return Response(reply.data, media_type=media_type, headers=headers)


@router.get(
    "/getimage",
    dependencies=[AnyCaller],
    summary="A stored image file",
    response_class=Response,
    responses={
        200: {
            "description": "The image bytes.",
            "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **_IMAGE_RESPONSES,
    },
)
async def get_image(
    dataset: DatasetDep,
    image: ImageQuery = None,
    filename: FilenameQuery = None,
    size: Annotated[
        str | None, Query(description="Longest side in pixels, 16-4096 (aspect kept, never upscaled).")
    ] = None,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    name = params.image(image, filename)
    longest = params.size(size)
    # The service compares If-None-Match itself, so a match costs no bytes on the wire.
    reply = await dataset.stub.images.GetImage(
        images_pb2.GetImageRequest(image=name, size=longest or 0, if_none_match=if_none_match or "")
    )
    return image_response(reply)


@router.get(
    "/getthumbnail",
    dependencies=[AnyCaller],
    summary="A square thumbnail of a stored image (WebP)",
    response_class=Response,
    responses={
        200: {
            "description": "A square centre crop as WebP, EXIF orientation applied, never upscaled.",
            "content": {"image/webp": {"schema": {"type": "string", "format": "binary"}}},
        },
        **_IMAGE_RESPONSES,
    },
)
async def get_thumbnail(
    dataset: DatasetDep,
    image: ImageQuery = None,
    filename: FilenameQuery = None,
    size: Annotated[
        str | None,
        Query(
            description=f"Side in pixels, {params.MIN_THUMBNAIL}-{params.MAX_THUMBNAIL} "
            f"(default {params.DEFAULT_THUMBNAIL})."
        ),
    ] = None,
    if_none_match: IfNoneMatchHeader = None,
) -> Response:
    name = params.image(image, filename)
    side = params.thumbnail_size(size)
    reply = await dataset.stub.images.GetThumbnail(
        images_pb2.GetThumbnailRequest(image=name, size=side, if_none_match=if_none_match or "")
    )
    return image_response(reply)


@router.get(
    "/getimagetags",
    dependencies=[AnyCaller],
    summary="A stored image's tags",
    response_model=ImageTags | ImageTagDetail,
    responses=error_responses(400, 404, 503, 504),
)
async def get_image_tags(
    dataset: DatasetDep,
    image: ImageQuery = None,
    filename: FilenameQuery = None,
    scores: Annotated[str | None, Query(description="`true`: `[tag, score]` pairs, highest score first.")] = None,
    detail: Annotated[
        str | None, Query(description="`true`: every tag with its source (manual, model, taught), manual first.")
    ] = None,
) -> ImageTags | ImageTagDetail:
    name = params.image(image, filename)
    with_scores = params.boolean(scores, "scores")
    if params.boolean(detail, "detail"):
        request = owned_tags_pb2.GetImageTagDetailRequest(image=name)
        return image_tag_detail(await dataset.stub.owned_tags.GetImageTagDetail(request))
    reply = await dataset.stub.tags.GetImageTags(tags_pb2.GetImageTagsRequest(image=name))
    if with_scores:
        ranked = sorted(reply.tags, key=lambda t: (-t.score, t.name))
        tags: list[str] | list[TagScore] = [(t.name, round(t.score, 4)) for t in ranked]
    else:
        tags = sorted(t.name for t in reply.tags)
    return ImageTags(
        image=reply.image or name,
        tagged=reply.tagged,
        model=reply.model_id or None,
        tags=tags,
        source=reply.source or None,
        original_name=reply.original_name or None,
    )
