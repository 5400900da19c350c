"""The vocabulary of a user's dataset listing (GetUserData, REST
/getuserdata): sort orders, the rated filter and tag filters, defined once
for the gateway's parsing, the wire and the dataset service's queries.

The REST words are the enum values; the wire enums (``library_pb2.SortOrder``,
``library_pb2.RatedFilter``) are derived from the member names, so a member
without its wire value fails at import rather than on a request. The limits
a listing is held to (tags per filter, characters per tag, page sizes) are
the dataset service's settings: it owns the data and enforces them, and the
gateway passes its refusal through unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .errors import InvalidArgument
from .protos import library_pb2

# Page numbers travel as uint32 and become SQL offsets; 2**31-1 fits both.
MAX_PAGE = 2**31 - 1
# The largest page size the wire can carry (the dataset service's own limit is lower).
MAX_WIRE_LIMIT = 2**32 - 1
# Control characters never occur in tag names, and PostgreSQL refuses NUL in text.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class SortOrder(StrEnum):
    """How a listing is ordered; ties are broken by image name."""

    DATE_DESC = "date-desc"
    DATE_ASC = "date-asc"
    RATING_DESC = "rating-desc"
    RATING_ASC = "rating-asc"
    NAME_ASC = "name-asc"
    NAME_DESC = "name-desc"
    # By the stored prediction of the user's model, images without one last.
    PREDICTED_DESC = "predicted-desc"
    PREDICTED_ASC = "predicted-asc"

    @classmethod
    def parse(cls, value: str | None, param: str = "sort") -> SortOrder:
        """The order a client named (any case; ``filename-*`` are aliases of
        ``name-*``); :attr:`DATE_DESC` when not given."""
        if value is None or value.strip() == "":
            return cls.DATE_DESC
        key = value.strip().lower()
        key = SORT_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            allowed = ", ".join([*cls, *SORT_ALIASES])
            raise InvalidArgument(f"'{param}' must be one of {allowed}; got {value[:40]!r}", "invalid_sort") from None

    def to_proto(self) -> library_pb2.SortOrder:
        return _SORT_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> SortOrder:
        """The order of a wire value (UNSPECIFIED: the default order)."""
        try:
            return _SORT_FROM_PROTO[value]
        except KeyError:
            raise InvalidArgument(f"'sort' has an unknown value {value}", "invalid_sort") from None


SORT_ALIASES = {"filename-asc": SortOrder.NAME_ASC, "filename-desc": SortOrder.NAME_DESC}


class RatedFilter(StrEnum):
    """Which images a listing holds."""

    YES = "yes"  # images the user rated
    NO = "no"  # images in the store the user has not rated
    ALL = "all"

    @classmethod
    def parse(cls, value: str | None, param: str = "rated") -> RatedFilter:
        """The filter a client named (any case); :attr:`YES` when not given."""
        if value is None or value.strip() == "":
            return cls.YES
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(cls)
            raise InvalidArgument(f"'{param}' must be one of {allowed}; got {value[:40]!r}", "invalid_rated") from None

    def to_proto(self) -> library_pb2.RatedFilter:
        return _RATED_TO_PROTO[self]

    @classmethod
    def from_proto(cls, value: int) -> RatedFilter:
        """The filter of a wire value (UNSPECIFIED: the default filter)."""
        try:
            return _RATED_FROM_PROTO[value]
        except KeyError:
            raise InvalidArgument(f"'rated' has an unknown value {value}", "invalid_rated") from None


_SORT_TO_PROTO = {order: library_pb2.SortOrder.Value(f"SORT_ORDER_{order.name}") for order in SortOrder}
_SORT_FROM_PROTO = {value: order for order, value in _SORT_TO_PROTO.items()} | {
    library_pb2.SORT_ORDER_UNSPECIFIED: SortOrder.DATE_DESC
}
_RATED_TO_PROTO = {rated: library_pb2.RatedFilter.Value(f"RATED_FILTER_{rated.name}") for rated in RatedFilter}
_RATED_FROM_PROTO = {value: rated for rated, value in _RATED_TO_PROTO.items()} | {
    library_pb2.RATED_FILTER_UNSPECIFIED: RatedFilter.YES
}


def _clean(names: Iterable[str]) -> tuple[str, ...]:
    out: dict[str, None] = {}  # keeps the first occurrence's order
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        if _CONTROL_RE.search(name):
            raise InvalidArgument("'filters' must not contain control characters", "invalid_filters")
        out[name] = None
    return tuple(out)


@dataclass(frozen=True)
class TagFilter:
    """Tags an image must all have, and tags it must have none of: names
    trimmed and lowercased, empty ones dropped, duplicates removed. Tag names
    are otherwise taken literally (quotes, ``%``, ``;`` are ordinary
    characters in a tag such as ``jack-o'-lantern``)."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Iterable[str], exclude: Iterable[str]) -> TagFilter:
        """The cleaned filter of two lists of names (400 for control characters)."""
        return cls(_clean(include), _clean(exclude))

    @classmethod
    def parse(cls, text: str | None) -> TagFilter:
        """The REST form: comma-separated names, ``-tag`` excludes."""
        include: list[str] = []
        exclude: list[str] = []
        for raw in (text or "").split(","):
            item = raw.strip()
            if item.startswith("-"):
                exclude.append(item[1:])
            else:
                include.append(item)
        return cls.of(include, exclude)

    def checked(self, max_tags: int, max_chars: int) -> TagFilter:
        """This filter, or 400 (``invalid_filters``) when it names more than
        ``max_tags`` tags in all or a tag longer than ``max_chars``."""
        for name in (*self.include, *self.exclude):
            if len(name) > max_chars:
                raise InvalidArgument(
                    f"'filters' has a tag longer than {max_chars} characters ({name[:40]!r}...)", "invalid_filters"
                )
        count = len(self.include) + len(self.exclude)
        if count > max_tags:
            raise InvalidArgument(f"'filters' may name at most {max_tags} tags, got {count}", "invalid_filters")
        return self
