"""Validation of the names and values every service accepts, so the gateway
and the services agree on what is valid and say it in the same words."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from .errors import InvalidArgument
from .images import CONTENT_TYPES

ALL_USERS = "all"
USER_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
IMAGE_NAME_RE = re.compile(r"[0-9a-f]{64}\.(?:" + "|".join(CONTENT_TYPES) + r")")


def missing(param: str) -> InvalidArgument:
    return InvalidArgument(f"the '{param}' parameter is required", "missing_parameter")


def user_name(value: str | None, param: str = "user", allow_all: bool = False) -> str:
    """A valid user name (or ``all`` when ``allow_all``)."""
    if value is None or value == "":
        raise missing(param)
    if value.lower() == ALL_USERS:
        if allow_all:
            return ALL_USERS
        raise InvalidArgument(f"'{param}' cannot be '{ALL_USERS}': that name is reserved", "invalid_user")
    if not USER_NAME_RE.fullmatch(value) or set(value) == {"."}:
        raise InvalidArgument(f"'{param}' must be 1-64 characters of letters, digits, '_', '.' or '-'", "invalid_user")
    return value


def image_name(value: str | None, param: str = "image") -> str:
    """A stored image name, ``<sha256>.<ext>``; anything else (paths,
    traversal attempts, other extensions) is refused before any I/O."""
    if value is None or value == "":
        raise missing(param)
    if not IMAGE_NAME_RE.fullmatch(value):
        raise InvalidArgument(
            f"'{param}' must be a stored image name: 64 lowercase hex digits and one of the extensions "
            + ", ".join(CONTENT_TYPES),
            "invalid_image_name",
        )
    return value


# The contract's rating grammar: a plain ASCII decimal (``0.5``, ``1``,
# ``.83``, ``1.``); the only sign allowed is a leading ``-`` on a zero, which
# some clients print for a rounded-down value. No exponent, underscores,
# ``+``, non-ASCII digits, "nan" or "inf" (all of which float() would take).
_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_NEGATIVE_ZERO = r"-(?:0+(?:\.0*)?|\.0+)"
RATING_RE = re.compile(rf"{_DECIMAL}|{_NEGATIVE_ZERO}", re.ASCII)


def rating(value: str | float | None, param: str = "rating") -> float:
    """A rating in [0, 1]. Text must be a plain ASCII decimal (see
    :data:`RATING_RE`; surrounding spaces are ignored); a number (from a JSON
    body) must be finite. NaN, infinities, other forms and values outside the
    range are refused; a negative zero comes back as 0."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise missing(param)
    problem = InvalidArgument(
        f"'{param}' must be a plain decimal number from 0 to 1 (like 0.5, 1 or .83), got {str(value)[:40]!r}",
        "invalid_rating",
    )
    if isinstance(value, str):
        text = value.strip(" \t\r\n")
        # Decimal for the range: 1.0000000000000000001 is over 1 though its float is 1.0.
        if not RATING_RE.fullmatch(text) or not 0 <= Decimal(text) <= 1:
            raise problem
        number = float(text)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        raise problem
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise problem
    return number + 0.0  # -0.0 + 0.0 is 0.0: stored as 0, never "-0"
