"""Parsing and validation of the documented query and form parameters.

Routes declare their parameters as optional strings (so /docs lists them) and
hand them to these functions, which either return the parsed value or raise
:class:`~tagrate_common.errors.InvalidArgument` with a message that names the
parameter and says what would be accepted. Unknown extra parameters are never
looked at, so they are ignored. A documented parameter given twice is a 400
naming it (:func:`single`), never a silent choice of one value: query strings
are checked by :func:`no_repeated_query` (every router's dependency), form
fields by :meth:`Fields.get`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Query, Request

from tagrate_common import validation
from tagrate_common.errors import InvalidArgument
from tagrate_common.userdata import MAX_PAGE, MAX_WIRE_LIMIT

from . import auth

# Tags per image (/tag, /tagbulk): the default model has 1000 labels; larger
# taggers have more, but no client reads thousands of near-zero scores.
MAX_TAG_LIMIT = 1000
MIN_SIZE, MAX_SIZE = 16, 4096
# /getthumbnail: the original's grid cells are 305 px squares.
MIN_THUMBNAIL, MAX_THUMBNAIL, DEFAULT_THUMBNAIL = 16, 1024, 305
# /gettags: more names than any tagger has labels.
MAX_TAG_LIST = 100_000
# /addimage: a URL or a post id.
MAX_SOURCE_CHARS = 2048

_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")

_INTEGER_RE = re.compile(r"[+-]?[0-9]{1,12}")


def repeated(param: str) -> InvalidArgument:
    return InvalidArgument(f"the '{param}' parameter is given more than once; send it once", "repeated_parameter")


def single(pairs: Iterable[tuple[str, str]], name: str) -> str | None:
    """The one value of ``name`` among ``pairs``, None when absent; 400
    (``repeated_parameter``, naming it) when it is given more than once."""
    found: str | None = None
    seen = False
    for key, value in pairs:
        if key == name:
            if seen:
                raise repeated(name)
            found, seen = value, True
    return found


@dataclass(frozen=True)
class Fields:
    """Named text parameters in the order they came (repeats kept), read one
    single-valued parameter at a time."""

    pairs: Sequence[tuple[str, str]] = ()

    def get(self, name: str) -> str | None:
        """The value of ``name``, None when absent; 400 naming it when it
        was given more than once."""
        return single(self.pairs, name)


def _query_names(dependant: Any) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


async def no_repeated_query(request: Request) -> None:
    """A router dependency: 400 when a query parameter the matched route
    declares is given more than once. FastAPI would silently take the last
    value; every documented parameter of this API is single-valued."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = _query_names(dependant)  # a few fields: cheaper to walk than to cache safely
    counts: dict[str, int] = {}
    for key, _ in request.query_params.multi_items():
        if key in names:
            counts[key] = counts.get(key, 0) + 1
            if counts[key] > 1:
                raise repeated(key)


def _present(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def _integer(value: str, param: str, low: int, high: int) -> int:
    text = value.strip()
    if not _INTEGER_RE.fullmatch(text) or not low <= int(text) <= high:
        raise InvalidArgument(
            f"'{param}' must be a whole number from {low} to {high}, got {value[:40]!r}", f"invalid_{param}"
        )
    return int(text)


def user(value: str | None, param: str = "user") -> str:
    """A valid user name; ``all`` is refused (see :func:`user_or_all`).
    A user token's caller may name only themselves (absent: themselves;
    another name: 403, see :func:`auth.scoped_user`)."""
    return validation.user_name(auth.scoped_user(value, param), param)


def user_or_all(value: str | None, param: str = "user", absent: str | None = None) -> str:
    """A valid user name or ``all`` (``all`` needs an admin caller). An
    absent value is ``absent`` when given, except for a user token's caller,
    for whom it is themselves."""
    if absent is not None and not _present(value) and auth.scoped_user(None, param) is None:
        return absent
    return validation.user_name(auth.scoped_user(value, param), param, allow_all=True)


def rating(value: str | float | None, param: str = "rating") -> float:
    """A finite rating in [0, 1], from text or a JSON number."""
    return validation.rating(value, param)


def image(image: str | None, filename: str | None = None) -> str:
    """A stored image name from ``image`` or its alias ``filename``."""
    if _present(image) and _present(filename) and image != filename:
        raise InvalidArgument(
            "'image' and its alias 'filename' name different images; send only one of them", "conflicting_parameters"
        )
    if _present(image):
        return validation.image_name(image, "image")
    if _present(filename):
        return validation.image_name(filename, "filename")
    raise validation.missing("image")


def page(value: str | None) -> int | None:
    """The 1-based page number, or None when the whole dataset is wanted."""
    if value is None or value.strip() == "":
        return None
    return _integer(value, "page", 1, MAX_PAGE)


def limit(value: str | None) -> int | None:
    """The page size asked for, None when not given (the dataset service
    then uses its default). Only its form is checked here: the largest page
    size is the dataset service's setting, and it answers 400 (naming
    ``limit``) for more, even without a page."""
    if value is None or value.strip() == "":
        return None
    text = value.strip()
    if not _INTEGER_RE.fullmatch(text) or not 1 <= int(text) <= MAX_WIRE_LIMIT:
        raise InvalidArgument(f"'limit' must be a whole number from 1 up, got {value[:40]!r}", "invalid_limit")
    return int(text)


def size(value: str | None) -> int | None:
    """The longest side wanted (16-4096 pixels), or None for the original."""
    if value is None or value.strip() == "":
        return None
    return _integer(value, "size", MIN_SIZE, MAX_SIZE)


def thumbnail_size(value: str | None) -> int:
    """The thumbnail's side (16-1024 pixels), 305 when not given."""
    if value is None or value.strip() == "":
        return DEFAULT_THUMBNAIL
    return _integer(value, "size", MIN_THUMBNAIL, MAX_THUMBNAIL)


def tag_list_limit(value: str | None) -> int | None:
    """The most tag names wanted (1 to :data:`MAX_TAG_LIST`); None for all."""
    if value is None or value.strip() == "":
        return None
    return _integer(value, "limit", 1, MAX_TAG_LIST)


def source(value: str | None, alias: str | None = None) -> str:
    """Where an image came from, from ``source`` or its alias
    ``sankaku_id`` (at most :data:`MAX_SOURCE_CHARS`); "" when not given."""
    if _present(value) and _present(alias) and value != alias:
        raise InvalidArgument(
            "'source' and its alias 'sankaku_id' differ; send only one of them", "conflicting_parameters"
        )
    param, text = ("source", value) if _present(value) else ("sankaku_id", alias)
    text = (text or "").strip()
    if len(text) > MAX_SOURCE_CHARS:
        raise InvalidArgument(
            f"'{param}' must be at most {MAX_SOURCE_CHARS} characters, got {len(text)}", f"invalid_{param}"
        )
    return text


def boolean(value: str | None, param: str, default: bool = False) -> bool:
    """``true/false``, ``1/0`` or ``yes/no`` (any case)."""
    if value is None or value.strip() == "":
        return default
    key = value.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise InvalidArgument(f"'{param}' must be true or false (or 1/0, yes/no); got {value[:40]!r}", f"invalid_{param}")


def threshold(value: str | None) -> float | None:
    """The lowest tag score wanted, a number in [0, 1]; None (the model's own
    thresholds) when not given."""
    if value is None or value.strip() == "":
        return None
    problem = InvalidArgument(
        f"'threshold' must be a number from 0 to 1 (tags scoring at least this are returned), got {value[:40]!r}",
        "invalid_threshold",
    )
    try:
        number = float(value.strip())
    except ValueError:
        raise problem from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise problem
    return number


def tag_limit(value: str | None) -> int | None:
    """The most tags wanted per image (1 to :data:`MAX_TAG_LIMIT`); None for
    every tag above the threshold."""
    if value is None or value.strip() == "":
        return None
    return _integer(value, "limit", 1, MAX_TAG_LIMIT)


# Marks a query parameter that /openapi.json lists as required (see
# app._openapi_tweaks). The route still declares it optional, so a request
# without it gets the API's own 400 (``missing_parameter``, naming it) from
# the parsing functions here rather than FastAPI's 422.
REQUIRED_MARK = "x-tagrate-required"


def required_query(description: str) -> Any:
    """``Query(description=...)`` documented as required."""
    return Query(description=description, json_schema_extra={REQUIRED_MARK: True})
