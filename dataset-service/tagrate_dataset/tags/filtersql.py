"""A listing's filter as SQL: the conditions of ``tagrate_common.tagfilter``
(tags from any or one source, ``~`` groups, ``rating:``/``predicted:``
comparisons, exclusions) written as conditions on an image id expression,
for any statement that lists images (GetUserData's pages and counts,
GetImageNeighbours, GetSimilar).

Reuse: :func:`resolve_sql` gives the columns that resolve the filter's tag
names inside a statement (aliases resolved; whether any tag implies each);
:func:`resolved` turns that row into a :class:`FilterSQL` (:func:`resolve`
does both in a statement of its own), whose
:meth:`FilterSQL.where` is `` AND ...`` text over bound parameters
(:attr:`FilterSQL.params`, plus the caller's ``:u`` user id, ``:v`` serving
model version, ``:m`` tagger model id and ``:th`` its threshold; see
:func:`model_params`).

An image has a tag when:
- the current tagger model scored it at or above the model's threshold and
  nobody removed it from the image (``hidden_tags``), or
- a person added it (``manual_tags``), or
- a taught classifier put it there (``taught_image_tags``; never where it
  was removed or added by hand),
each for the tag itself or any tag that implies it (``tag_implied``, the
closure of the implications, read inside the statement: no tag list ever
comes into Python). ``manual:``/``taught:``/``model:`` keep one source.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import text
from sqlalchemy.orm import Session

from tagrate_common.tagfilter import Comparison, Filter

# In the filter-first shape, the first condition collects its images from
# the tag indexes (``image IN (...)``); the others are probes per row.
FILTER_FIRST = "in"
SCAN = "exists"


@dataclass(frozen=True)
class Term:
    param: str  # the bound tag id's parameter name
    source: str  # "" (any) | "manual" | "taught" | "model"
    implied: bool  # some tag implies it
    # The sources that have the tag (or a tag implying it) on some image at
    # all: a probe of a source that has none is left out.
    present: frozenset[str] = frozenset(("model", "manual", "taught"))
    # Read from ``tag_members`` (any source, implications applied; see
    # ``tags/members.py``) rather than from the source tables.
    members: bool = False

    @property
    def sources(self) -> list[str]:
        wanted = [self.source] if self.source else ["model", "manual", "taught"]
        return [source for source in wanted if source in self.present or source == "model"]


@dataclass(frozen=True)
class Cond:
    terms: tuple[Term, ...] = ()
    comparison: Comparison | None = None
    negate: bool = False
    param: str = ""  # the comparison's bound value

    @property
    def drives(self) -> bool:
        """Whether its images can be collected from the tag indexes."""
        return not self.negate and len(self.terms) == 1


@dataclass(frozen=True)
class FilterSQL:
    conds: tuple[Cond, ...] = ()
    params: Mapping[str, object] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.conds)

    @property
    def drivers(self) -> list[Cond]:
        return [cond for cond in self.conds if cond.drives]

    def driven_by(self, key: Callable[[Cond], int]) -> FilterSQL:
        """The same filter with the driving conditions first, least ``key`` first."""
        drivers = sorted(self.drivers, key=key)
        rest = [cond for cond in self.conds if not cond.drives]
        return replace(self, conds=(*drivers, *rest))

    def with_members(self) -> FilterSQL:
        """The same filter with its any-source terms read from ``tag_members``."""
        conds = tuple(
            replace(cond, terms=tuple(replace(t, members=not t.source) for t in cond.terms)) for cond in self.conds
        )
        return replace(self, conds=conds)

    def where(self, image: str, style: str = SCAN) -> str:
        """`` AND ...`` for each condition on the image id expression
        ``image``; with ``FILTER_FIRST`` a driving first condition is ``IN``
        its images."""
        parts = []
        for n, cond in enumerate(self.conds):
            if n == 0 and style == FILTER_FIRST and cond.drives:
                parts.append(f"{image} IN ({images_sql(cond.terms[0])})")
            else:
                parts.append(condition_sql(cond, image))
        return "".join(f" AND {part}" for part in parts)


NOTHING = None


def _ids(term: Term, alias: str) -> str:
    """``= :t`` or, when tags imply it, ``IN`` the tag and those tags."""
    if not term.implied:
        return f"= :{term.param}"
    return (
        f"IN (SELECT CAST(:{term.param} AS INTEGER) UNION ALL "
        f"SELECT {alias}c.tag_id FROM tag_implied {alias}c WHERE {alias}c.implied_id = :{term.param})"
    )


def _model_sql(term: Term, image: str, alias: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM image_tags {alias}x WHERE {alias}x.image_id = {image} "
        f"AND {alias}x.tagger_model_id = :m AND {alias}x.tag_id {_ids(term, alias)} AND {alias}x.score >= :th "
        f"AND NOT EXISTS (SELECT 1 FROM hidden_tags {alias}h WHERE {alias}h.image_id = {alias}x.image_id "
        f"AND {alias}h.tag_id = {alias}x.tag_id))"
    )


def _manual_sql(term: Term, image: str, alias: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM manual_tags {alias}y WHERE {alias}y.image_id = {image} "
        f"AND {alias}y.tag_id {_ids(term, alias)})"
    )


def _taught_sql(term: Term, image: str, alias: str) -> str:
    return (
        f"EXISTS (SELECT 1 FROM taught_image_tags {alias}z WHERE {alias}z.image_id = {image} "
        f"AND {alias}z.tag_id {_ids(term, alias)})"
    )


_BY_SOURCE = {"model": _model_sql, "manual": _manual_sql, "taught": _taught_sql}


def term_sql(term: Term, image: str) -> str:
    """Whether the image has the term's tag (one probe per source)."""
    alias = term.param
    if term.members:
        return (
            f"EXISTS (SELECT 1 FROM tag_members {alias}g WHERE {alias}g.tag_id = :{term.param} "
            f"AND {alias}g.image_id = {image})"
        )
    probes = [_BY_SOURCE[source](term, image, alias) for source in term.sources]
    return probes[0] if len(probes) == 1 else "(" + " OR ".join(probes) + ")"


def images_sql(term: Term) -> str:
    """The ids of the images with the term's tag, from the tag indexes."""
    alias = term.param
    if term.members:
        return f"SELECT {alias}g.image_id FROM tag_members {alias}g WHERE {alias}g.tag_id = :{term.param}"
    parts = {
        "model": (
            f"SELECT {alias}x.image_id FROM image_tags {alias}x WHERE {alias}x.tagger_model_id = :m "
            f"AND {alias}x.tag_id {_ids(term, alias)} AND {alias}x.score >= :th "
            f"AND NOT EXISTS (SELECT 1 FROM hidden_tags {alias}h WHERE {alias}h.image_id = {alias}x.image_id "
            f"AND {alias}h.tag_id = {alias}x.tag_id)"
        ),
        "manual": f"SELECT {alias}y.image_id FROM manual_tags {alias}y WHERE {alias}y.tag_id {_ids(term, alias)}",
        "taught": f"SELECT {alias}z.image_id FROM taught_image_tags {alias}z WHERE {alias}z.tag_id {_ids(term, alias)}",
    }
    return " UNION ALL ".join(parts[source] for source in term.sources)


_OPERATORS = {"<": "<", "<=": "<=", ">": ">", ">=": ">=", "=": "="}


def condition_sql(cond: Cond, image: str) -> str:
    if cond.comparison is not None:
        op = _OPERATORS[cond.comparison.op]
        alias = cond.param
        if cond.comparison.field == "rating":
            sql = (
                f"EXISTS (SELECT 1 FROM ratings {alias}q WHERE {alias}q.user_id = :u AND {alias}q.image_id = {image} "
                f"AND {alias}q.rating {op} :{cond.param})"
            )
        else:
            sql = (
                f"EXISTS (SELECT 1 FROM predictions {alias}p WHERE {alias}p.user_id = :u "
                f"AND {alias}p.image_id = {image} AND {alias}p.model_version = :v "
                f"AND {alias}p.score {op} :{cond.param})"
            )
    elif len(cond.terms) == 1:
        sql = term_sql(cond.terms[0], image)
    else:
        sql = "(" + " OR ".join(term_sql(term, image) for term in cond.terms) + ")"
    return f"NOT {sql}" if cond.negate else sql


def frequency_sql(cond: Cond, n: int) -> str:
    """How many images the driving condition's tag is on, counted up to
    ``:cap`` (so a common tag costs no more than the candidates do)."""
    return f"(SELECT count(*) FROM ({images_sql(cond.terms[0])} LIMIT :cap) f{n})"


def tag_id_sql(n: int, name_param: str = "tag") -> str:
    """The id of the tag named ``:tag<n>`` (an alias resolved; NULL: no such tag)."""
    return (
        f"coalesce((SELECT a.tag_id FROM tag_aliases a WHERE a.alias = :{name_param}{n}), "
        f"(SELECT t.id FROM tags t WHERE t.name = :{name_param}{n}))"
    )


def resolve_sql(count: int, name_param: str = "tag") -> list[str]:
    """For each of ``count`` tag names bound as ``:tag0``, ``:tag1``...: the
    tag's id (an alias resolved to its tag; NULL when there is no such tag),
    whether any tag implies it, and whether any image has it (or a tag
    implying it) by hand and taught: ``COLUMNS_PER_TAG`` columns each."""
    columns = []
    for n in range(count):
        tag_id = tag_id_sql(n, name_param)
        ids = f"(SELECT {tag_id} UNION ALL SELECT c.tag_id FROM tag_implied c WHERE c.implied_id = {tag_id})"
        columns.append(tag_id)
        columns.append(f"(SELECT count(*) FROM tag_implied c WHERE c.implied_id = {tag_id})")
        columns.append(f"EXISTS (SELECT 1 FROM manual_tags m WHERE m.tag_id IN {ids})")
        columns.append(f"EXISTS (SELECT 1 FROM taught_image_tags z WHERE z.tag_id IN {ids})")
    return columns


COLUMNS_PER_TAG = 4


def resolved(flt: Filter, row: Sequence[object], prefix: str = "ft") -> FilterSQL | None:
    """The filter's SQL from the resolved ids (``row``: the
    :func:`resolve_sql` columns for ``flt.names`` in order); None when it
    can match nothing (an included tag nobody has). Unknown tags in a ``~``
    group are dropped, and an excluded unknown tag excludes nothing."""
    found: dict[str, tuple[int, bool]] = {}
    present: dict[str, frozenset[str]] = {}
    for n, name in enumerate(flt.names):
        tag_id, implied, manual, taught = row[COLUMNS_PER_TAG * n : COLUMNS_PER_TAG * (n + 1)]
        if tag_id is not None:
            assert isinstance(tag_id, int)
            found[name] = (tag_id, bool(implied))
            present[name] = frozenset(
                source for source, has in (("model", True), ("manual", manual), ("taught", taught)) if has
            )
    params: dict[str, object] = {}
    conds: list[Cond] = []
    for n, condition in enumerate(flt.conditions):
        if condition.comparison is not None:
            param = f"{prefix}{n}"
            params[param] = condition.comparison.value
            conds.append(Cond(comparison=condition.comparison, param=param))
            continue
        terms = []
        for k, term in enumerate(condition.terms):
            if term.name not in found:
                continue
            tag_id, implied = found[term.name]
            param = f"{prefix}{n}_{k}"
            params[param] = tag_id
            terms.append(Term(param, term.source, implied, present[term.name]))
        if not terms:
            if condition.negate:
                continue
            return NOTHING
        conds.append(Cond(terms=tuple(terms), negate=condition.negate))
    return FilterSQL(tuple(conds), params)


def resolve(session: Session, flt: Filter) -> FilterSQL | None:
    """The filter's SQL, its tag names resolved in one statement (none
    without tag names); None as :func:`resolved`."""
    if not flt:
        return FilterSQL()
    names = flt.names
    row: Sequence[object] = ()
    if names:
        sql = f"SELECT {', '.join(resolve_sql(len(names)))}"
        row = tuple(session.execute(text(sql), {f"tag{n}": name for n, name in enumerate(names)}).one())
    return resolved(flt, row)


def model_params(model: tuple[int, float] | None) -> dict[str, object]:
    """``:m`` and ``:th`` for the current tagger model (one that tags
    nothing when there is none yet: manual and taught tags still match)."""
    if model is None:
        return {"m": -1, "th": 2.0}
    return {"m": model[0], "th": model[1]}
