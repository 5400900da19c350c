"""Validation of the names and values every service accepts, so the gateway
and the services agree on what is valid and say it in the same words."""

from __future__ import annotations

import math
import re

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


def rating(value: str | float | None, param: str = "rating") -> float:
    """A rating in [0, 1]; NaN and infinities are refused."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        raise missing(param)
    problem = InvalidArgument(f"'{param}' must be a number between 0 and 1, got {str(value)[:40]!r}", "invalid_rating")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise problem from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise problem
    return number
