"""Tags people own (dataset service): /addtags and /removetags (a user
token tags as its user, which is recorded; tags are shared by everyone),
/getimagetags?detail=true (through :func:`image_tag_detail`), aliases and
implications (anyone reads them, an admin changes them) and /taughttags.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.protos import owned_tags_pb2

from .. import params
from ..auth import AdminOnly, AnyCaller, Caller
from ..bodies import JSON_MEDIA_TYPE, post_fields, read_small_body
from ..deps import DatasetDep, SettingsDep
from ..errors import error_responses
from ..tag_schemas import (
    ChangedTags,
    ImageTagDetail,
    SourcedTag,
    TagAliases,
    TagAliasItem,
    TagImplicationItem,
    TagImplications,
    TaughtTagItem,
    TaughtTags,
)
from ..uploads.openapi import multipart_body, text_property

router = APIRouter(tags=["tags people own"], dependencies=[Depends(params.no_repeated_query)])

_CHANGE_BODY = multipart_body(
    {
        "image": text_property("A stored image name, `<sha256>.<ext>` (`filename` is an alias)."),
        "tag": text_property('A tag name; repeat the field for several (JSON: `"tags": [...]`).'),
    },
    ["image", "tag"],
)


def _sourced(tags: Any) -> list[SourcedTag]:
    return [
        SourcedTag(
            tag=t.tag,
            source=t.source,
            score=round(t.score, 4) if t.HasField("score") else None,
            category=t.category or None,
        )
        for t in tags
    ]


def image_tag_detail(reply: owned_tags_pb2.ImageTagDetail) -> ImageTagDetail:
    return ImageTagDetail(image=reply.image, original_name=reply.original_name or None, tags=_sourced(reply.tags))


def _caller_name(request: Request) -> str:
    who: Caller | None = getattr(request.state, "caller", None)
    return "" if who is None or who.admin else who.user or ""


async def _json_object(request: Request, settings: Any) -> dict[str, Any]:
    body = await read_small_body(request, settings.max_form_field_bytes)
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"the JSON body is malformed: {str(exc)[:120]}", "malformed_json") from None
    if not isinstance(document, dict):
        raise InvalidArgument("the JSON body must be an object", "malformed_json")
    return document


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def _change_request(request: Request, settings: Any) -> owned_tags_pb2.ChangeTagsRequest:
    """``image`` and the tags of an /addtags or /removetags body: a form
    (``tag`` repeated) or JSON ``{"image": NAME, "tags": [T, ...]}``."""
    if _media_type(request) == JSON_MEDIA_TYPE:
        document = await _json_object(request, settings)
        image_value, filename_value = document.get("image"), document.get("filename")
        tags = document.get("tags", document.get("tag"))
        if isinstance(tags, str):
            tags = [tags]
        if tags is None:
            raise validation.missing("tags")
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise InvalidArgument("'tags' must be a list of tag names in the JSON body", "invalid_tag")
        for key, value in (("image", image_value), ("filename", filename_value)):
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(f"'{key}' must be a string in the JSON body", f"invalid_{key}")
        image = params.image(image_value, filename_value)
    else:
        fields = await post_fields(request, settings)
        image = params.image(fields.get("image"), fields.get("filename"))
        tags = [str(value) for key, value in fields.pairs if key in ("tag", "tags")]
        if not tags:
            raise validation.missing("tag")
    return owned_tags_pb2.ChangeTagsRequest(image=image, tags=tags, caller=_caller_name(request))


@router.post(
    "/addtags",
    dependencies=[AnyCaller],
    summary="Add manual tags to a stored image",
    description="Tags are shared by everyone (the adding user is recorded). Aliases resolve first; the tags "
    "a tag implies are added with it. Answers the image's tags after the change. 400 `invalid_tag` names a bad "
    "tag name; 404 unknown image.",
    response_model=ChangedTags,
    responses=error_responses(400, 404, 503, 504),
    openapi_extra=_CHANGE_BODY,
)
async def add_tags(request: Request, settings: SettingsDep, dataset: DatasetDep) -> ChangedTags:
    reply = await dataset.stub.owned_tags.AddTags(await _change_request(request, settings))
    return ChangedTags(image=reply.image, tags=_sourced(reply.tags))


@router.post(
    "/removetags",
    dependencies=[AnyCaller],
    summary="Remove tags from a stored image",
    description="A manual tag is deleted; a model or taught tag is hidden on this image for good (re-tagging "
    "does not bring it back, and a taught tag learns from it as a negative example).",
    response_model=ChangedTags,
    responses=error_responses(400, 404, 503, 504),
    openapi_extra=_CHANGE_BODY,
)
async def remove_tags(request: Request, settings: SettingsDep, dataset: DatasetDep) -> ChangedTags:
    reply = await dataset.stub.owned_tags.RemoveTags(await _change_request(request, settings))
    return ChangedTags(image=reply.image, tags=_sourced(reply.tags))


async def _rule_fields(request: Request, settings: Any, names: tuple[str, str]) -> tuple[str, str]:
    fields = await post_fields(request, settings, accept_json=True)
    values = []
    for name in names:
        value = fields.get(name)
        if value is None or value.strip() == "":
            raise validation.missing(name)
        values.append(value)
    return values[0], values[1]


_RULE_ERRORS = error_responses(400, 404, 409, 503, 504)


@router.get("/tagaliases", dependencies=[AnyCaller], summary="Every tag alias", response_model=TagAliases)
async def list_aliases(dataset: DatasetDep) -> TagAliases:
    reply = await dataset.stub.owned_tags.ListAliases(owned_tags_pb2.ListTagRulesRequest())
    return TagAliases(aliases=[TagAliasItem(alias=a.alias, tag=a.tag) for a in reply.aliases])


@router.post(
    "/tagaliases",
    dependencies=[AdminOnly],
    summary="Make a name an alias of a tag (admin)",
    description='JSON `{"alias": "kitty", "tag": "cat"}` or form fields. Adding, removing or filtering by the '
    "alias acts on its tag. 409 for a chain (the tag is an alias, or other aliases stand for the alias), an "
    "alias that is a tag in use, or an alias of another tag already.",
    response_model=TagAliasItem,
    responses=_RULE_ERRORS,
)
async def add_alias(request: Request, settings: SettingsDep, dataset: DatasetDep) -> TagAliasItem:
    alias, tag = await _rule_fields(request, settings, ("alias", "tag"))
    reply = await dataset.stub.owned_tags.AddAlias(owned_tags_pb2.TagAliasRule(alias=alias, tag=tag))
    return TagAliasItem(alias=reply.alias, tag=reply.tag)


@router.delete(
    "/tagaliases/{alias}",
    dependencies=[AdminOnly],
    summary="Delete a tag alias (admin)",
    response_model=TagAliasItem,
    responses=_RULE_ERRORS,
)
async def delete_alias(dataset: DatasetDep, alias: Annotated[str, Path(description="The alias.")]) -> TagAliasItem:
    reply = await dataset.stub.owned_tags.DeleteAlias(owned_tags_pb2.TagAliasRule(alias=alias))
    return TagAliasItem(alias=reply.alias, tag=reply.tag)


@router.get(
    "/tagimplications", dependencies=[AnyCaller], summary="Every tag implication", response_model=TagImplications
)
async def list_implications(dataset: DatasetDep) -> TagImplications:
    reply = await dataset.stub.owned_tags.ListImplications(owned_tags_pb2.ListTagRulesRequest())
    return TagImplications(implications=[TagImplicationItem(tag=i.tag, implies=i.implies) for i in reply.implications])


@router.post(
    "/tagimplications",
    dependencies=[AdminOnly],
    summary="Declare that a tag implies another (admin)",
    description='JSON `{"tag": "cat", "implies": "animal"}` or form fields. Adding `cat` adds `animal` '
    "(transitively, also to images that have `cat` by hand already); a filter on `animal` matches images "
    "tagged `cat`. 409 for a cycle.",
    response_model=TagImplicationItem,
    responses=_RULE_ERRORS,
)
async def add_implication(request: Request, settings: SettingsDep, dataset: DatasetDep) -> TagImplicationItem:
    tag, implies = await _rule_fields(request, settings, ("tag", "implies"))
    reply = await dataset.stub.owned_tags.AddImplication(owned_tags_pb2.TagImplicationRule(tag=tag, implies=implies))
    return TagImplicationItem(tag=reply.tag, implies=reply.implies)


@router.delete(
    "/tagimplications/{tag}/{implies}",
    dependencies=[AdminOnly],
    summary="Delete a tag implication (admin)",
    response_model=TagImplicationItem,
    responses=_RULE_ERRORS,
)
async def delete_implication(
    dataset: DatasetDep,
    tag: Annotated[str, Path(description="The implying tag.")],
    implies: Annotated[str, Path(description="The implied tag.")],
) -> TagImplicationItem:
    reply = await dataset.stub.owned_tags.DeleteImplication(owned_tags_pb2.TagImplicationRule(tag=tag, implies=implies))
    return TagImplicationItem(tag=reply.tag, implies=reply.implies)


@router.get(
    "/taughttags",
    dependencies=[AnyCaller],
    summary="The tags the system learned from manual tags",
    response_model=TaughtTags,
    responses=error_responses(503, 504),
)
async def taught_tags(dataset: DatasetDep) -> TaughtTags:
    reply = await dataset.stub.owned_tags.ListTaughtTags(owned_tags_pb2.ListTagRulesRequest())
    return TaughtTags(
        [
            TaughtTagItem(
                tag=t.tag,
                examples=t.examples,
                negatives=t.negatives,
                images_tagged=t.images_tagged,
                precision_cv=round(t.precision_cv, 4),
                trained_at=t.trained_at,
            )
            for t in reply.tags
        ]
    )
