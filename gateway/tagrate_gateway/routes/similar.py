"""Finding things (dataset service's SimilarService; the rater embeds an
uploaded example): /getsimilar by stored image (GET) or by upload (POST,
nothing stored), /getduplicates and /resolveduplicates (admin)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import library_pb2, rater_pb2, similar_pb2
from tagrate_common.userdata import RatedFilter, TagFilter

from .. import params
from ..auth import ActsAs, AdminOnly, AdminOnlyChanging
from ..bodies import JSON_MEDIA_TYPE, post_fields, read_small_body
from ..config import GatewaySettings
from ..deps import DatasetDep, RaterDep, SettingsDep
from ..errors import error_responses
from ..similar_schemas import (
    DuplicateGroup,
    DuplicateGroups,
    DuplicateImage,
    NotDuplicates,
    ResolvedDuplicates,
    SimilarImage,
    SimilarImages,
)
from ..uploads.multipart import read_form
from ..uploads.openapi import file_property, multipart_body, text_property

router = APIRouter(tags=["finding things"], dependencies=[Depends(params.no_repeated_query)])

_MAX_LIMIT = 200
_MAX_GROUPS = 100


def _limit(value: str | None, high: int) -> int:
    if value is None or value.strip() == "":
        return 0
    return params._integer(value, "limit", 1, high)


def _rated(value: str | None) -> library_pb2.RatedFilter:
    """The wire value of ``rated`` (absent: every image)."""
    if value is None or value.strip() == "":
        return RatedFilter.ALL.to_proto()
    return RatedFilter.parse(value).to_proto()


def _request(
    user: str | None, limit: str | None, filters: str | None, rated: str | None, **what: Any
) -> similar_pb2.GetSimilarRequest:
    tag_filter = TagFilter.parse(filters)
    who = params.user(user) if user is not None and user.strip() != "" else ""
    return similar_pb2.GetSimilarRequest(
        user=who,
        limit=_limit(limit, _MAX_LIMIT),
        include_tags=tag_filter.include,
        exclude_tags=tag_filter.exclude,
        rated=_rated(rated),
        **what,
    )


def _answer(reply: similar_pb2.GetSimilarResponse) -> SimilarImages:
    return SimilarImages(
        image=reply.image or None,
        results=[
            SimilarImage(
                image=r.image,
                similarity=round(r.similarity, 6),
                rating=r.rating if r.HasField("rating") else None,
                predicted=r.predicted if r.HasField("predicted") else None,
            )
            for r in reply.results
        ],
    )


_SIMILAR_DOC = (
    "Stored images most similar in content to `image` (cosine similarity of the rater's feature vectors), most "
    "similar first, the image itself excluded. With `user`, each result carries the user's rating and "
    "prediction, and `filters` and `rated` narrow the results as in /getuserdata (`rated` defaults to all). "
    "409 `features_pending` while the image's features are not computed yet."
)


@router.get(
    "/getsimilar",
    dependencies=[ActsAs],
    summary="Images similar to a stored image",
    description=_SIMILAR_DOC,
    response_model=SimilarImages,
    responses=error_responses(400, 404, 409, 503, 504),
)
async def get_similar(
    dataset: DatasetDep,
    image: Annotated[str | None, params.required_query("Stored image name, `<sha256>.<ext>`.")] = None,
    filename: Annotated[str | None, Query(description="Alias of `image`.")] = None,
    user: Annotated[str | None, Query(description="Whose ratings and predictions to show (optional).")] = None,
    limit: Annotated[str | None, Query(description="Results, 1-200 (default 24).")] = None,
    filters: Annotated[str | None, Query(description="As /getuserdata.")] = None,
    rated: Annotated[str | None, Query(description="As /getuserdata (default all; yes/no need `user`).")] = None,
) -> SimilarImages:
    name = params.image(image, filename)
    reply = await dataset.stub.similar.GetSimilar(_request(user, limit, filters, rated, image=name))
    return _answer(reply)


@router.post(
    "/getsimilar",
    dependencies=[ActsAs],
    summary="Images similar to an uploaded example (nothing is stored)",
    description="As GET /getsimilar, for an uploaded `image` (the rater computes its features; nothing is "
    "stored): `image` is null in the answer. The other parameters are form or query fields.",
    response_model=SimilarImages,
    responses=error_responses(400, 404, 413, 415, 503, 504),
    openapi_extra=multipart_body(
        {
            "image": file_property("The example image (JPEG, PNG, WebP, GIF or BMP)."),
            "user": text_property("Whose ratings and predictions to show (optional)."),
            "limit": text_property("Results, 1-200 (default 24)."),
            "filters": text_property("As /getuserdata."),
            "rated": text_property("As /getuserdata (default all)."),
        },
        ["image"],
    ),
)
async def post_similar(request: Request, settings: SettingsDep, dataset: DatasetDep, rater: RaterDep) -> SimilarImages:
    async with read_form(request, settings, max_files=1) as form:
        fields = list(request.query_params.multi_items()) + form.fields

        def field(name: str) -> str | None:
            return params.single(fields, name)

        upload = form.file("image")
        upload.check_image(settings.image_limits)
        search = _request(field("user"), field("limit"), field("filters"), field("rated"))
        embedded = await rater.stub.Embed(rater_pb2.EmbedRequest(images=[upload.image_file()]))
    [vector] = embedded.vectors
    search.vector.values.extend(vector.values)
    search.extractor_id = embedded.extractor_id
    reply = await dataset.stub.similar.GetSimilar(search)
    return _answer(reply)


@router.get(
    "/getduplicates",
    dependencies=[AdminOnly],
    summary="Groups of near-duplicate images (the same picture re-encoded, resized, cropped or re-tagged)",
    description="Groups found in the background: candidates by perceptual hash or by feature similarity, "
    "confirmed by feature similarity; newest first. `pending` counts images not compared yet.",
    response_model=DuplicateGroups,
    responses=error_responses(400, 503, 504),
)
async def get_duplicates(
    dataset: DatasetDep,
    page: Annotated[str | None, Query(description="1-based page (default 1).")] = None,
    limit: Annotated[str | None, Query(description="Groups per page, 1-100 (default 20).")] = None,
) -> DuplicateGroups:
    number = params.page(page) or 1
    reply = await dataset.stub.similar.GetDuplicates(
        similar_pb2.GetDuplicatesRequest(page=number, limit=_limit(limit, _MAX_GROUPS))
    )
    return DuplicateGroups(
        groups=[
            DuplicateGroup(
                images=[
                    DuplicateImage(
                        image=i.image, width=i.width, height=i.height, bytes=i.bytes, original_name=i.original_name
                    )
                    for i in group.images
                ],
                similarity=round(group.similarity, 6),
            )
            for group in reply.groups
        ],
        total=reply.total,
        pending=reply.pending,
    )


async def _resolve_fields(request: Request, settings: GatewaySettings) -> dict[str, Any]:
    """``keep``/``remove``/``not_duplicates`` from a JSON object (lists of
    names) or form/query fields (comma-separated names)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == JSON_MEDIA_TYPE:
        body = await read_small_body(request, settings.max_form_field_bytes)
        try:
            document = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidArgument(f"the JSON body is malformed: {str(exc)[:120]}", "malformed_json") from None
        if not isinstance(document, dict):
            raise InvalidArgument("the JSON body must be an object", "malformed_json")
        return document
    fields = await post_fields(request, settings)
    out: dict[str, Any] = {}
    for key in ("keep", "remove", "not_duplicates"):
        value = fields.get(key)
        if value is not None:
            out[key] = value if key == "keep" else [n.strip() for n in value.split(",") if n.strip()]
    return out


def _names(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise InvalidArgument(f"'{param}' must be a list of image names", f"invalid_{param}")
    if not value:
        raise validation.missing(param)
    return [validation.image_name(n, param) for n in value]


@router.post(
    "/resolveduplicates",
    dependencies=[AdminOnlyChanging],
    summary="Resolve a duplicate group: keep one image, or record that the images are different pictures",
    description='`{"keep": NAME, "remove": [NAME, ...]}` deletes the `remove` images after moving their ratings '
    "(each user's rating of the kept image wins, else the latest of the removed), album places and original "
    'name onto the kept image, all in one transaction. `{"not_duplicates": [NAME, NAME, ...]}` records that '
    "these are different pictures: no group holds two of them again. JSON, or form fields with "
    "comma-separated names.",
    response_model=ResolvedDuplicates | NotDuplicates,
    responses=error_responses(400, 404, 503, 504),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "keep": {"type": "string"},
                            "remove": {"type": "array", "items": {"type": "string"}},
                            "not_duplicates": {"type": "array", "items": {"type": "string"}},
                        },
                    }
                }
            },
        }
    },
)
async def resolve_duplicates(
    request: Request, settings: SettingsDep, dataset: DatasetDep
) -> ResolvedDuplicates | NotDuplicates:
    given = await _resolve_fields(request, settings)
    if "not_duplicates" in given and ("keep" in given or "remove" in given):
        raise InvalidArgument("send either 'keep' and 'remove' or 'not_duplicates'", "conflicting_parameters")
    if "not_duplicates" in given:
        names = _names(given["not_duplicates"], "not_duplicates")
        reply = await dataset.stub.similar.MarkNotDuplicates(similar_pb2.MarkNotDuplicatesRequest(images=names))
        return NotDuplicates(not_duplicates=names, pairs=reply.pairs)
    keep = given.get("keep")
    if not isinstance(keep, str) or not keep:
        raise validation.missing("keep")
    remove = _names(given.get("remove"), "remove") if given.get("remove") is not None else []
    if not remove:
        raise validation.missing("remove")
    done = await dataset.stub.similar.ResolveDuplicates(
        similar_pb2.ResolveDuplicatesRequest(keep=validation.image_name(keep, "keep"), remove=remove)
    )
    return ResolvedDuplicates(kept=done.kept, removed=list(done.removed), ratings_moved=done.ratings_moved)
