"""Where an image stands in a user's listing, and its neighbours there
(GetImageNeighbours), built with SQLAlchemy Core over the same conditions
as the listing's SQL (``sql.py``): the filtered set numbered in one pass
(window functions) when an included tag is rare, otherwise the position
counted and the neighbours probed with keyset comparisons that an index on
the sort keys serves."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, null, or_, text
from sqlmodel import Session, select

from tagrate_common.tagfilter import parse_filter
from tagrate_common.userdata import RatedFilter, SortOrder, TagFilter

from ..models import Image, Prediction, Rating, TaggerModel
from ..records import current_tagger_model
from ..tags import filtersql, members
from ..tags.filtersql import Cond, FilterSQL
from .listing import UserImage
from .sql import FILTER_FIRST, PREDICTED


@dataclass(frozen=True)
class _Key:
    """One sort key: the expression, its direction, and whether it can be
    NULL (NULLs sort last in either direction)."""

    expr: ColumnElement
    descending: bool = False
    nullable: bool = False

    def ordering(self, reverse: bool = False) -> ColumnElement:
        descending = self.descending != reverse
        key = self.expr.desc() if descending else self.expr.asc()
        if self.nullable:
            key = key.nulls_first() if reverse else key.nulls_last()
        return key


def _keys(sort: SortOrder, rated: RatedFilter, version: str = "") -> list[_Key]:
    """The listing's sort keys, the last always the (unique) image name.
    The ``predicted-*`` orders need the prediction join (``version``);
    without a model every prediction is null, so they order by name."""
    if sort in PREDICTED:
        if not version:
            return [_Key(Image.name)]
        score = _Key(Prediction.score, descending=sort is SortOrder.PREDICTED_DESC, nullable=True)
        return [score, _Key(Image.name)]
    if sort is SortOrder.NAME_ASC:
        return [_Key(Image.name)]
    if sort is SortOrder.NAME_DESC:
        return [_Key(Image.name, descending=True)]
    if sort in (SortOrder.DATE_DESC, SortOrder.DATE_ASC):
        if rated is RatedFilter.YES:
            date = Rating.rated_at
        elif rated is RatedFilter.NO:
            date = Image.created_at
        else:
            date = func.coalesce(Rating.rated_at, Image.created_at)
        return [_Key(date, descending=sort is SortOrder.DATE_DESC), _Key(Image.name)]
    if rated is RatedFilter.NO:  # nothing is rated: by rating means by name
        return [_Key(Image.name)]
    # Without NULL ratings (rated=yes) the plain order can use the index.
    rating = _Key(Rating.rating, descending=sort is SortOrder.RATING_DESC, nullable=rated is RatedFilter.ALL)
    return [rating, _Key(Image.name)]


def _beyond(keys: Sequence[_Key], values: Sequence[object], after: bool) -> ColumnElement[bool]:
    """Rows strictly after (or before) the row whose key values are
    ``values`` in the order ``keys`` define: a keyset comparison, one key
    at a time, so an index on the keys can serve it."""
    key, value, rest = keys[0], values[0], keys[1:]
    later = (lambda e, v: e < v) if key.descending == after else (lambda e, v: e > v)
    if value is None:  # a nullable key (NULLs last): later rows are NULL too
        tail = _beyond(rest, values[1:], after) if rest else literal(False)
        return and_(key.expr.is_(None), tail) if after else or_(key.expr.is_not(None), and_(key.expr.is_(None), tail))
    strictly = later(key.expr, value)
    if key.nullable and after:
        strictly = or_(strictly, key.expr.is_(None))
    if not rest:
        return strictly
    return or_(strictly, and_(key.expr == value, _beyond(rest, values[1:], after)))


@dataclass(frozen=True)
class Neighbours:
    position: int  # 1-based
    total: int
    prev: UserImage | None
    next: UserImage | None


def neighbours(
    session: Session,
    user_id: int,
    image: str,
    tags: TagFilter = TagFilter(),
    sort: SortOrder = SortOrder.DATE_DESC,
    rated: RatedFilter = RatedFilter.YES,
    version: str = "",
    use_members: bool = True,
) -> Neighbours | None:
    """Where ``image`` stands in the listing ``listing.user_data`` returns for
    the same parameters, and the rows before and after it; None when it is
    not in that listing. Never reads the listing into Python. When an
    included tag is rarer than ``_WINDOW_MAX_ROWS`` images, the filtered set
    is numbered in one pass (window functions); otherwise the position is
    counted and the neighbours probed with keyset comparisons that an index
    on the sort keys serves. Any-source tag terms are read from
    ``tag_members`` when it serves the current tagger model (``use_members``:
    the setting ``tag_members``), as the listing reads them: one index range
    per tag instead of probes of the source tables."""
    flt = filtersql.resolve(session, parse_filter(tags))
    if flt is None:  # an included tag nobody has
        return None
    model = current_tagger_model(session) if flt else None
    if flt and use_members and _members_serve(session, _model_key(model)):
        flt = flt.with_members()
    where = _Where(flt, {**filtersql.model_params(_model_key(model)), "u": user_id, "v": version, **flt.params})
    # The predicted orders sort by the serving ``version``'s scores (as
    # ``listing.user_data`` does); no other order needs the prediction join.
    version = version if sort in PREDICTED else ""
    keys = _keys(sort, rated, version)
    if flt.drivers:
        # Counted up to the bound, so a common tag costs no more than that.
        frequency = {cond: _frequency(session, where, n, cond, _WINDOW_MAX_ROWS) for n, cond in enumerate(flt.drivers)}
        # The rarest tag first: the filter-first shape collects its images
        # and probes the others (SQLite follows the shape; PostgreSQL plans
        # by its statistics either way).
        where = _Where(flt.driven_by(frequency.__getitem__), where.params)
        if frequency[where.flt.conds[0]] < _WINDOW_MAX_ROWS:
            return _numbered(session, user_id, image, where, rated, keys, version)
    return _probed(session, user_id, image, where, rated, keys, version)


@dataclass(frozen=True)
class _Where:
    """The filter's conditions and every parameter they bind."""

    flt: FilterSQL
    params: dict[str, object]


def _members_serve(session: Session, model: tuple[int, float] | None) -> bool:
    """Whether ``tag_members`` is ready and built for the current tagger model."""
    row = session.execute(text("SELECT " + ", ".join(members.STATE_COLUMNS[:2]))).one()
    return members.usable(row.members_model, row.members_threshold, model)


def _model_key(model: TaggerModel | None) -> tuple[int, float] | None:
    return (model.id, model.threshold) if model is not None and model.id is not None else None


# Most rows a filtered set may have to be numbered in one pass. Numbering
# costs about what the page's own count and sort of the same set cost (the
# page is O(matches) too), and three passes of the keyset queries over a
# filter-first set would cost three times that; a set this large or larger
# is left to the keyset queries, whose counts walk an index.
_WINDOW_MAX_ROWS = 5000


def _numbered(
    session: Session,
    user_id: int,
    image: str,
    where: _Where,
    rated: RatedFilter,
    keys: Sequence[_Key],
    version: str = "",
) -> Neighbours | None:
    """One pass over the filtered set: each row numbered in the listing's
    order, with the rows before and after it beside it (window functions
    over the same ordering), and the image's row picked out."""
    joined = rated is not RatedFilter.NO
    order = [key.ordering() for key in keys]
    # lag()/lead() of a NULL literal has no type on PostgreSQL: rated=no
    # rows carry only the name.
    columns = [Image.name, *((Rating.rating, Rating.rated_at) if joined else ())]
    windowed = [
        Image.name.label("name"),
        func.row_number().over(order_by=order).label("position"),
        func.count().over().label("total"),
    ]
    for step, function in (("prev", func.lag), ("next", func.lead)):
        windowed += [function(column).over(order_by=order).label(f"{step}_{column.key}") for column in columns]
    numbered = _base_query(select(*windowed), user_id, where, rated, FILTER_FIRST, version=version).subquery()
    # execute(), not exec(): SQLModel would return the first column alone.
    row = session.execute(select(numbered).where(numbered.c.name == image)).first()
    if row is None:
        return None
    found = row._mapping

    def neighbour(step: str) -> UserImage | None:
        name = found[f"{step}_name"]
        if name is None:
            return None
        if not joined:
            return UserImage(name, None, None)
        return UserImage(name, found[f"{step}_rating"], found[f"{step}_rated_at"])

    return Neighbours(found["position"], found["total"], neighbour("prev"), neighbour("next"))


def _split(
    keys: Sequence[_Key], values: Sequence[object], after: bool
) -> tuple[ColumnElement[bool], ColumnElement[bool] | None]:
    """:func:`_beyond` as two disjoint conditions: rows beyond on the first
    key alone (a range of an index that starts with it), and rows tied on
    the first key and beyond on the rest (None with a single key). Apart,
    each is a plain index range; an OR of both is not."""
    key, value, rest = keys[0], values[0], keys[1:]
    if value is None:  # a nullable key (NULLs last)
        strictly = literal(False) if after else key.expr.is_not(None)
        tied = key.expr.is_(None)
    else:
        later = (lambda e, v: e < v) if key.descending == after else (lambda e, v: e > v)
        strictly = later(key.expr, value)
        if key.nullable and after:
            strictly = or_(strictly, key.expr.is_(None))
        tied = key.expr == value
    if not rest:
        return strictly, None
    return strictly, and_(tied, _beyond(rest, values[1:], after))


def _probed(
    session: Session,
    user_id: int,
    image: str,
    where: _Where,
    rated: RatedFilter,
    keys: Sequence[_Key],
    version: str = "",
) -> Neighbours | None:
    """The position as counts of the rows before the image, the neighbours
    as one-row keyset queries in the listing's order (or its reverse); the
    rows tied with the image on the first sort key are reached apart from
    the rest, so every query is a range of the index the page walks."""
    joined = rated is not RatedFilter.NO

    def query(columns: Select, for_count: bool = False) -> Select:
        # A count that compares scores needs the prediction join (``version``).
        return _base_query(columns, user_id, where, rated, FILTER_FIRST, for_count=for_count, version=version)

    found = session.exec(query(select(*(key.expr for key in keys))).where(Image.name == image)).first()
    if found is None:
        return None
    # SQLModel returns a single-column select as scalars, not rows.
    values = [found] if len(keys) == 1 else list(found)
    # Counting leaves out the image table unless a sort key needs it: a
    # user's ratings are counted from the (user_id, key) index alone.
    lean = rated is RatedFilter.YES and _on_ratings(keys[0])
    total = session.exec(query(select(func.count()), for_count=True)).one()
    strictly, tied = _split(keys, values, after=False)
    before = session.exec(query(select(func.count()), for_count=lean).where(strictly)).one()
    if tied is not None:
        before += session.exec(query(select(func.count())).where(tied)).one()

    row_columns = select(
        Image.name,
        (Rating.rating if joined else null()).label("rating"),
        (Rating.rated_at if joined else null()).label("rated_at"),
    )

    def nearest(after: bool) -> UserImage | None:
        # The tied rows come first (next to the image), then the others.
        for condition in reversed(_split(keys, values, after)):
            if condition is None:
                continue
            ordering = [key.ordering(reverse=not after) for key in keys]
            row = session.exec(query(row_columns).where(condition).order_by(*ordering).limit(1)).first()
            if row is not None:
                return UserImage(*row)
        return None

    return Neighbours(before + 1, total, nearest(after=False), nearest(after=True))


def _on_ratings(key: _Key) -> bool:
    """Whether the sort key is a column of ``ratings`` (so counting a user's
    rated images by it needs no other table)."""
    return key.expr is Rating.rating or key.expr is Rating.rated_at


def _frequency(session: Session, where: _Where, n: int, cond: Cond, cap: int) -> int:
    """How many images have the driving tag, counted up to ``cap`` (so a
    very common tag costs no more than the candidates do): enough to tell
    which tag is rarest and whether it is rarer than the candidates."""
    sql = text(f"SELECT {filtersql.frequency_sql(cond, n)}")
    return session.execute(sql, {**where.params, "cap": cap}).scalar_one()


def _base_query(
    stmt: Select,
    user_id: int,
    where: _Where,
    rated: RatedFilter,
    style: str,
    for_count: bool = False,
    version: str = "",
) -> Select:
    """``stmt`` with the FROM and WHERE clauses of the user's matching images.
    Counting needs neither the image names (rated=yes) nor the outer joins.
    With a model ``version``, the user's predictions by it are outer-joined
    (one probe of the ``predictions`` primary key per row)."""
    image_id = Rating.image_id if rated is RatedFilter.YES else Image.id
    if rated is RatedFilter.YES:
        stmt = stmt.select_from(Rating).where(Rating.user_id == user_id)
        if not for_count:
            stmt = stmt.join(Image, Image.id == Rating.image_id)
    elif rated is RatedFilter.NO:
        stmt = stmt.select_from(Image).where(~exists().where(Rating.user_id == user_id, Rating.image_id == Image.id))
    else:
        stmt = stmt.select_from(Image)
        if not for_count:
            stmt = stmt.outerjoin(Rating, and_(Rating.image_id == Image.id, Rating.user_id == user_id))
    if version and not for_count:
        stmt = stmt.outerjoin(
            Prediction,
            and_(Prediction.user_id == user_id, Prediction.image_id == image_id, Prediction.model_version == version),
        )
    return _tag_conditions(stmt, where, style, rated)


def _tag_conditions(stmt: Select, where: _Where, style: str, rated: RatedFilter) -> Select:
    """``stmt`` restricted to the images the filter keeps: the filter's SQL
    text (``tags/filtersql.py``) on the image id column, as the listing's."""
    if not where.flt:
        return stmt
    image_id = "ratings.image_id" if rated is RatedFilter.YES else "images.id"
    condition = where.flt.where(image_id, style).removeprefix(" AND ")
    used = {name: value for name, value in where.params.items() if re.search(rf":{name}\b", condition)}
    return stmt.where(text(condition).bindparams(**used))
