"""Tags people own: the rules for a tag name (/addtags, /removetags,
aliases, implications) and the parsed form of a listing's ``filters``
beyond plain tags: ``manual:cat`` / ``taught:cat`` / ``model:cat`` (the tag
from that source only), ``rating:>=0.5`` / ``predicted:>0.8`` comparisons
and ``~a,~b`` OR-groups (see the contract, "Tags people own").

The gateway splits ``filters`` into included and excluded items
(:class:`tagrate_common.userdata.TagFilter`) and passes them on unchanged;
the dataset service parses them here (so every caller of a listing,
/getuserdata, /getimageneighbours, /getsimilar, gets the same rules and the
same 400s) and writes them as SQL (``tagrate_dataset.tags.filtersql``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidArgument
from .userdata import TagFilter

TAG_NAME_MAX_CHARS = 64

# The filter keys: the three tag sources, then the two comparisons.
SOURCES = ("manual", "taught", "model")
COMPARED = ("rating", "predicted")
FILTER_KEYS = SOURCES + COMPARED

_FORBIDDEN_RE = re.compile(r"[\x00-\x1f\x7f,]")
# An ASCII decimal 0-1: "0.5", "1", ".83", "0".
_NUMBER_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_OPERATORS = (">=", "<=", ">", "<", "=")


def tag_name(raw: str, param: str = "tag") -> str:
    """A tag name as stored: trimmed, lowercased, spaces as ``_``; 400
    (``invalid_tag``) naming the tag when it is empty, longer than 64
    characters, has a control character or a comma, starts with ``-`` or
    ``~`` or with a filter key (``manual:``, ``rating:``...)."""
    name = raw.strip().lower().replace(" ", "_")
    shown = raw[:70]
    if not name:
        raise InvalidArgument(f"'{param}' must be a tag name of 1 to {TAG_NAME_MAX_CHARS} characters", "invalid_tag")
    if len(name) > TAG_NAME_MAX_CHARS:
        raise InvalidArgument(
            f"tag {shown!r} is longer than {TAG_NAME_MAX_CHARS} characters (in '{param}')", "invalid_tag"
        )
    if _FORBIDDEN_RE.search(name):
        raise InvalidArgument(
            f"tag {shown!r} has a comma or a control character, which tag names may not contain (in '{param}')",
            "invalid_tag",
        )
    if name[0] in "-~":
        raise InvalidArgument(
            f"tag {shown!r} starts with {name[0]!r}, which filters use (in '{param}'); tag names may not",
            "invalid_tag",
        )
    for key in FILTER_KEYS:
        if name.startswith(f"{key}:"):
            raise InvalidArgument(
                f"tag {shown!r} starts with the filter key '{key}:' (in '{param}'); tag names may not",
                "invalid_tag",
            )
    return name


@dataclass(frozen=True)
class TagTerm:
    """A tag, from any source (``source`` "") or from one only."""

    name: str
    source: str = ""


@dataclass(frozen=True)
class Comparison:
    """``rating:>=0.5``: the user's rating (only images they rated) or the
    prediction serving them, compared with a number 0-1."""

    field: str  # "rating" | "predicted"
    op: str  # one of < <= > >= =
    value: float


@dataclass(frozen=True)
class Condition:
    """One condition every listed image meets: a tag (``terms`` of one), at
    least one of several tags (the ``~`` group), or a comparison;
    ``negate``: the image must not meet it."""

    terms: tuple[TagTerm, ...] = ()
    comparison: Comparison | None = None
    negate: bool = False


@dataclass(frozen=True)
class Filter:
    conditions: tuple[Condition, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every tag name the filter mentions, once each, in order."""
        seen: dict[str, None] = {}
        for condition in self.conditions:
            for term in condition.terms:
                seen[term.name] = None
        return tuple(seen)

    def __bool__(self) -> bool:
        return bool(self.conditions)


def _invalid(item: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"'filters' item {item[:70]!r} {why}", "invalid_filter")


def _key(item: str) -> tuple[str, str] | None:
    """(key, value) when ``item`` starts with a filter key and a colon.
    ``rating:`` then a letter is no comparison but a tagger's rating tag
    (WD v3's ``rating:general``, DeepDanbooru's ``rating:safe``): an
    ordinary tag name, which people cannot give (see :func:`tag_name`)."""
    head, colon, rest = item.partition(":")
    if colon and head in FILTER_KEYS:
        if head == "rating" and rest[:1].isalpha():
            return None
        return head, rest
    return None


def _term(item: str, shown: str) -> TagTerm:
    keyed = _key(item)
    if keyed is None:
        return TagTerm(item)
    key, rest = keyed
    if key in COMPARED:
        raise _invalid(shown, f"compares '{key}:', which cannot be part of a '~' group")
    name = rest.strip()
    if not name or name[0] in "-~" or _key(name) is not None:
        raise _invalid(shown, f"needs a tag name after '{key}:' (such as {key}:cat)")
    return TagTerm(name, key)


def _comparison(field: str, rest: str, shown: str) -> Comparison:
    text = rest.strip()
    for op in _OPERATORS:
        if text.startswith(op):
            number = text[len(op) :].strip()
            if _NUMBER_RE.fullmatch(number) and 0.0 <= float(number) <= 1.0:
                return Comparison(field, op, float(number))
            break
    raise _invalid(shown, f"must be {field}: then one of < <= > >= = and a number from 0 to 1 (such as {field}:>=0.5)")


def parse_filter(tags: TagFilter) -> Filter:
    """The conditions of a listing's (cleaned) filter items; 400
    (``invalid_filter``) naming an item with a filter key and a malformed
    value, a ``~`` or comparison item that is excluded. An item with any
    other colon is an ordinary tag name."""
    conditions: list[Condition] = []
    group: list[TagTerm] = []
    for item in tags.include:
        if item.startswith("~"):
            member = item[1:].strip()
            if not member:
                raise _invalid(item, "needs a tag name after '~' (such as ~cat)")
            group.append(_term(member, item))
            continue
        keyed = _key(item)
        if keyed is not None and keyed[0] in COMPARED:
            conditions.append(Condition(comparison=_comparison(keyed[0], keyed[1], item)))
        else:
            conditions.append(Condition(terms=(_term(item, item),)))
    for item in tags.exclude:
        shown = f"-{item}"
        if item.startswith("~"):
            raise _invalid(shown, "excludes a '~' group member; write -tag for each tag to exclude")
        keyed = _key(item)
        if keyed is not None and keyed[0] in COMPARED:
            raise _invalid(shown, f"excludes a comparison; write the opposite comparison instead ({keyed[0]}:<...)")
        conditions.append(Condition(terms=(_term(item, shown),), negate=True))
    if group:
        conditions.append(Condition(terms=tuple(dict.fromkeys(group))))
    return Filter(tuple(dict.fromkeys(conditions)))
