"""The parameters of a POST that takes no files: its query string plus its
body, a form (multipart/form-data, or the urlencoded form ``curl -d`` sends)
or, where the endpoint allows it, a JSON object.

A parameter given twice (twice in the form, in both the query string and
the body, or as a repeated JSON key) is a 400 naming it, as everywhere in
the API (:func:`tagrate_gateway.params.single`). A JSON body where the
endpoint takes only a form, a malformed JSON body, or a JSON value of the
wrong type is a 400 naming the problem, never FastAPI's 422.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import ClientDisconnect, Request

from tagrate_common.errors import InvalidArgument, PayloadTooLarge

from . import params
from .config import GatewaySettings
from .uploads.multipart import read_form

JSON_MEDIA_TYPE = "application/json"
URLENCODED_MEDIA_TYPE = "application/x-www-form-urlencoded"

# A value from a JSON body keeps its JSON type (a rating may be a number);
# everything from a query string or a form is text.
Value = str | int | float


@dataclass(frozen=True)
class BodyFields:
    """A POST's named parameters in the order they came (repeats kept)."""

    pairs: Sequence[tuple[str, Value]] = ()

    def value(self, name: str) -> Value | None:
        """The value of ``name`` as sent (text, or a JSON number), None when
        absent; 400 naming it when it was given more than once."""
        found: Value | None = None
        seen = False
        for key, value in self.pairs:
            if key == name:
                if seen:
                    raise params.repeated(name)
                found, seen = value, True
        return found

    def get(self, name: str) -> str | None:
        """The text value of ``name``; a JSON integer is taken as its decimal
        text (a numeric user id), any other non-text JSON value is a 400."""
        value = self.value(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise InvalidArgument(
            f"'{name}' must be a string in the JSON body, got {json.dumps(value)[:40]}", f"invalid_{name}"
        )


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_small_body(request: Request, limit: int) -> bytes:
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise PayloadTooLarge(f"the request body is larger than {limit} bytes", "field_too_large")
    except ClientDisconnect:
        raise InvalidArgument("the request body was cut off before it ended", "incomplete_body") from None
    return bytes(body)


def _unique_keys(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``object_pairs_hook`` keeping the pairs (and so their repeats) in order."""
    return pairs


# JSON nested deeper than this is refused before it is parsed: the parser
# recurses once per level (1,000 levels were a RecursionError, a 500).
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_depth_ok(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``body`` nests arrays/objects at most ``limit`` deep. Linear
    and recursion-free: strings are cut out first, then brackets counted."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return True
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", body)):
        if bracket in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return False
        else:
            depth -= 1
    return True


def parse_json_pairs(body: bytes) -> list[tuple[str, Any]]:
    """A JSON object body as its (key, value) pairs in order, repeats kept.
    400 (``malformed_json``) for anything but UTF-8 JSON text holding one
    object, or nested deeper than :data:`MAX_JSON_DEPTH`."""
    if not json_depth_ok(body):
        raise InvalidArgument(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", "malformed_json")
    try:
        document = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        raise InvalidArgument("the JSON body is not valid UTF-8", "malformed_json") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"the JSON body is malformed: {str(exc)[:120]}", "malformed_json") from None
    if not isinstance(document, list) or not all(isinstance(pair, tuple) for pair in document):
        raise InvalidArgument("the JSON body must be an object of named parameters", "malformed_json")
    return document


def _json_pairs(body: bytes) -> list[tuple[str, Value]]:
    document = parse_json_pairs(body)
    pairs: list[tuple[str, Value]] = []
    for key, value in document:
        # bool is an int in Python; a JSON true is never a name or a rating.
        if value is None:
            continue  # null: as if the field were absent (a missing required field is a 400 naming it)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidArgument(
                f"'{key}' in the JSON body must be a string or a number, got {json.dumps(value)[:40]}",
                f"invalid_{key}" if key.isidentifier() else "malformed_json",
            )
        pairs.append((key, value))
    return pairs


async def post_fields(request: Request, settings: GatewaySettings, accept_json: bool = False) -> BodyFields:
    """The query string's parameters followed by the body's: a form, or a
    JSON object when ``accept_json``. A POST without a body has only its
    query string. 400 for a JSON body elsewhere or a malformed one; 415 for
    another media type (from the multipart reader)."""
    pairs: list[tuple[str, Value]] = list(request.query_params.multi_items())
    media_type = _media_type(request)
    limit = settings.max_form_field_bytes
    if media_type == JSON_MEDIA_TYPE or media_type.endswith("+json"):
        if not accept_json:
            raise InvalidArgument(
                f"{request.url.path} takes form fields (multipart/form-data or urlencoded) or a query string, "
                "not a JSON body",
                "json_not_accepted",
            )
        pairs += _json_pairs(await read_small_body(request, limit))
    elif media_type == URLENCODED_MEDIA_TYPE:
        body = await read_small_body(request, limit)
        try:
            pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise InvalidArgument("the form is not valid utf-8", "invalid_encoding") from None
    elif media_type or request.headers.get("content-length", "0") != "0":
        async with read_form(request, settings, max_files=0) as form:
            pairs += form.fields
    return BodyFields(pairs)
