"""Tagging uploads without storing them: /tag and /tagbulk (tagger service)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tagrate_common.protos import common_pb2, tagger_pb2

from .. import params
from ..auth import AnyCaller
from ..deps import SettingsDep, TaggerDep
from ..errors import error_responses
from ..schemas.common import TagScore
from ..schemas.models import BulkTagResult, TagResult
from ..uploads.chunks import ChunkPlan, call_in_chunks, same_model
from ..uploads.files import check_images
from ..uploads.multipart import MultipartForm, read_form
from ..uploads.openapi import file_property, files_property, multipart_body, text_property

router = APIRouter(tags=["tagging"], dependencies=[Depends(params.no_repeated_query)])

_THRESHOLD = text_property(
    "Lowest score returned, 0 to 1 (default: the model's own thresholds).",
    "0.2",
)
_LIMIT = text_property(f"Most tags per image, 1 to {params.MAX_TAG_LIMIT} (default: no limit).", "10")
_ERRORS = error_responses(400, 413, 415, 503, 504)


def _score(value: float) -> float:
    """A float32 score as JSON: six significant digits drop the float32
    noise (0.87 rather than 0.8700000047683716) without rounding small
    scores to zero."""
    return float(f"{value:.6g}")


def _tags(result: tagger_pb2.ImageTags) -> list[TagScore]:
    return [(tag.name, _score(tag.score)) for tag in result.tags]


def _tag_params(form: MultipartForm) -> tuple[float | None, int | None]:
    """The form's ``threshold`` and ``limit``, validated (400 naming the bad one)."""
    return params.threshold(form.field("threshold")), params.tag_limit(form.field("limit"))


def _tag_request(
    images: list[common_pb2.ImageFile], threshold: float | None, limit: int | None
) -> tagger_pb2.TagRequest:
    return tagger_pb2.TagRequest(
        images=images,
        threshold=threshold,  # None leaves the optional field unset: the model's own thresholds
        limit=limit or 0,  # 0 on the wire: no limit
    )


@router.post(
    "/tag",
    dependencies=[AnyCaller],
    summary="Tag an image",
    description='`{"model": ..., "tags": [[tag, score], ...]}`, highest score first.',
    response_model=TagResult,
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "image": file_property("The image (JPEG, PNG, WebP, GIF or BMP)."),
            "threshold": _THRESHOLD,
            "limit": _LIMIT,
        },
        ["image"],
    ),
)
async def tag(request: Request, settings: SettingsDep, tagger: TaggerDep) -> TagResult:
    async with read_form(request, settings, max_files=1) as form:
        upload = form.file("image")
        threshold, limit = _tag_params(form)
        upload.check_image(settings.image_limits)
        reply = await tagger.stub.Tag(_tag_request([upload.image_file()], threshold, limit))
    return TagResult(model=reply.model_id, tags=_tags(reply.results[0]))


@router.post(
    "/tagbulk",
    dependencies=[AnyCaller],
    summary="Tag several images",
    description='`{"model": ..., "tags": [[[tag, score], ...], ...]}`: one list per image, in upload order. '
    "A bad file fails the request with a message naming it by position (1-based) and filename.",
    response_model=BulkTagResult,
    responses=_ERRORS,
    openapi_extra=multipart_body(
        {
            "images": files_property("The images, each JPEG, PNG, WebP, GIF or BMP."),
            "threshold": _THRESHOLD,
            "limit": _LIMIT,
        },
        ["images"],
    ),
)
async def tag_bulk(request: Request, settings: SettingsDep, tagger: TaggerDep) -> BulkTagResult:
    async with read_form(request, settings, max_files=settings.max_bulk_files) as form:
        uploads = form.files_required("images")
        threshold, limit = _tag_params(form)
        check_images(uploads, settings.image_limits)
        replies = await call_in_chunks(
            uploads,
            ChunkPlan.from_settings(settings),
            lambda images: tagger.stub.Tag(_tag_request(images, threshold, limit)),
        )
    model = same_model([reply.model_id for reply in replies], "tagger")
    return BulkTagResult(model=model, tags=[_tags(result) for reply in replies for result in reply.results])
