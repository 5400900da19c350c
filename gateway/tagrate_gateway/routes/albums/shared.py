"""What the album routes share: their parameters, the album id and image
list parsers, the caller an album is checked against, paging."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.userdata import TagFilter

from ... import auth, params
from ...errors import error_responses

ID_RE = re.compile(r"[0-9]{1,18}")


def albums_router() -> APIRouter:
    """A router for album routes: tagged "albums", a repeated query parameter refused."""
    return APIRouter(tags=["albums"], dependencies=[Depends(params.no_repeated_query)])


ERRORS = error_responses(400, 404, 503, 504)


UserQuery = Annotated[str | None, params.required_query("User name (1-64 of `[A-Za-z0-9_.-]`; numeric ids too).")]
IdQuery = Annotated[str | None, params.required_query("The montage post's (album's) id.")]
FiltersQuery = Annotated[
    str | None,
    Query(
        description="The library's filter (as /getuserdata's: tags, `-tag`, `manual:`/`taught:`/`model:`, "
        "`~` groups, `rating:`/`predicted:`); keeps only the matching images inside each album."
    ),
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
    if not ID_RE.fullmatch(text) or int(text) < 1:
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


def paged(body: dict[str, Any], page: int | None, limit: int, total: int) -> dict[str, Any]:
    if page:
        body.update(page=page, limit=limit, max_page=_max_page(total, limit))
    return body


def parse_tags(filters: str | None) -> TagFilter:
    return TagFilter.parse(filters)
