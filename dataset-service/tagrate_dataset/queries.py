"""Read queries over a user's dataset: GetUserData (tag filters, sorting,
rated/unrated, paging) and the training examples StreamTrainingData sends.

Everything happens in SQL with bound parameters. Tag filters are driven from
the tag index: each included tag is ``image_id IN (SELECT image_id FROM
image_tags WHERE tagger_model_id = :m AND tag_id = :t AND score >= :th)``, a
range scan of ``ix_image_tags_model_tag_score_image``; each excluded tag is
a NOT EXISTS probe of the ``image_tags`` primary key. A user's ratings are
reached through the ``(user_id, ...)`` indexes of ``ratings``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, null, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from tagrate_common.errors import InvalidArgument
from tagrate_common.userdata import MAX_PAGE, RatedFilter, SortOrder, TagFilter

from .crud import current_tagger_model
from .models import Image, ImageFeatures, ImageTag, Prediction, Rating, Tag, TaggerModel, User


@dataclass(frozen=True)
class Paging:
    """``page`` is 1-based; page 0 means everything (limit ignored)."""

    page: int = 0
    limit: int = 0


def paging(page: int, limit: int, default_limit: int, max_limit: int) -> Paging:
    """Validated paging; a page without a limit (0) gets ``default_limit``.
    A limit is checked whenever it is given, even without a page (where it
    does not matter), so a client learns of a bad one before it pages."""
    if not 0 <= page <= MAX_PAGE:
        raise InvalidArgument(f"'page' must be a whole number from 1 to {MAX_PAGE}, got {page}", "invalid_page")
    if limit and not 1 <= limit <= max_limit:
        raise InvalidArgument(f"'limit' must be a whole number from 1 to {max_limit}, got {limit}", "invalid_limit")
    if page == 0:
        return Paging()
    return Paging(page, limit or default_limit)


@dataclass(frozen=True)
class UserImage:
    image: str
    rating: float | None  # None: not rated by the user
    rated_at: datetime | None
    predicted: float | None = None  # None: no current prediction
    predicted_by: str | None = None  # "personal" | "global"


@dataclass(frozen=True)
class UserDataPage:
    images: list[UserImage]
    total: int  # matches over all pages


def user_data(
    session: Session,
    user_id: int,
    tags: TagFilter = TagFilter(),
    sort: SortOrder = SortOrder.DATE_DESC,
    rated: RatedFilter = RatedFilter.YES,
    page: Paging = Paging(),
    version: str = "",
) -> UserDataPage:
    """One page of a user's dataset. An image matches when the current
    tagger model scored every included tag at or above its threshold and no
    excluded tag. An included tag nobody has (or any include before a tagger
    model exists) matches nothing; unknown excluded tags are ignored. The
    "date" of an unrated image is when it was stored; unrated images sort
    last by rating; ties are broken by image name so pages are stable.
    Each row carries the user's stored prediction by model ``version``
    (the one serving the user, see ``scoring.py``; "": none), which the
    ``predicted-*`` orders sort by, images without one last."""
    model = current_tagger_model(session) if (tags.include or tags.exclude) else None
    ids = _tag_ids(session, (*tags.include, *tags.exclude))
    if tags.include and (model is None or any(name not in ids for name in tags.include)):
        return UserDataPage([], 0)
    include = [ids[name] for name in tags.include]
    exclude = [ids[name] for name in tags.exclude if name in ids]
    if model is None:
        include = exclude = []

    # SQLite plans by the query's shape and knows nothing of how common each
    # tag is, so the shape is chosen here (see _FILTER_FIRST and _SCAN).
    # PostgreSQL turns both shapes into the same semi-joins and chooses by
    # its own per-tag statistics, so it needs none of this.
    steer = bool(include) and session.get_bind().dialect.name == "sqlite"
    count_style, candidates = _FILTER_FIRST, 0
    if steer:
        assert model is not None
        # Candidates: the rows before tag filtering (the user's ratings, or
        # the stored images). An included tag rarer than them drives the
        # query, the rarest first; otherwise the candidates are walked and
        # each probes its tags.
        everything = _base_query(select(func.count()), user_id, None, [], [], _unjoined(rated), _SCAN, for_count=True)
        candidates = session.exec(everything).one()
        frequency = {tag_id: _frequency(session, model, tag_id, candidates) for tag_id in include}
        include.sort(key=frequency.__getitem__)
        if frequency[include[0]] >= candidates:
            count_style = _SCAN

    if not page.page:
        rows = _rows(session, user_id, model, include, exclude, sort, rated, count_style, None, 0, version)
        return UserDataPage(rows, len(rows))
    count = _base_query(select(func.count()), user_id, model, include, exclude, rated, count_style, for_count=True)
    total = session.exec(count).one()
    offset = (page.page - 1) * page.limit
    if offset >= total:  # past the end: nothing to fetch
        return UserDataPage([], total)
    # Walking the sort order's index and probing each row's tags stops after
    # offset+limit matches: cheaper than collecting every match and sorting
    # when matches are dense and the page is near the start. The count says
    # how dense they are.
    page_style = _FILTER_FIRST
    if steer and _index_ordered(sort, rated) and (offset + page.limit) * candidates <= _SCAN_BUDGET * total:
        page_style = _SCAN
    if sort in _PREDICTED and version:
        # The scored rows come first in either direction: walk them in the
        # score index (probing each row's tags unless a rare tag is better
        # collected first), then the unscored ones by name.
        scored_style = (
            _SCAN if not steer or (offset + page.limit) * candidates <= _SCAN_BUDGET * total else _FILTER_FIRST
        )
        args = (session, user_id, model, include, exclude, sort, rated, page.limit, offset, version)
        return UserDataPage(_predicted_rows(*args, scored_style, page_style), total)
    rows = _rows(session, user_id, model, include, exclude, sort, rated, page_style, page.limit, offset, version)
    return UserDataPage(rows, total)


def _unjoined(rated: RatedFilter) -> RatedFilter:
    """Candidates for rated=no are estimated by every image (counting the
    unrated ones exactly would cost as much as the query itself)."""
    return RatedFilter.ALL if rated is RatedFilter.NO else rated


def _frequency(session: Session, model: TaggerModel, tag_id: int, cap: int) -> int:
    """How many images have the tag, counted up to ``cap`` (so a very common
    tag costs no more than the candidates do): enough to tell which tag is
    rarest and whether it is rarer than the candidates."""
    capped = _tagged_with(model, tag_id).limit(cap).subquery()
    return session.exec(select(func.count()).select_from(capped)).one()


# How tag conditions are written. Both mean the same; they differ in the
# plan SQLite picks (it has no per-tag statistics and follows the query's
# shape; PostgreSQL turns both into semi-joins and plans by its statistics).
# Filter first: the first (rarest) included tag is ``image_id IN (its index
# range)``, so matches are collected from the tag index and then sorted; the
# other tags are probed per candidate.
_FILTER_FIRST = "in"
# Scan: every tag is a correlated EXISTS, so rows are walked in the sort
# order's index and each probes its tags, stopping after offset+limit matches.
_SCAN = "exists"
# Most rows the scan strategy may expect to walk before it has offset+limit matches.
_SCAN_BUDGET = 5000


def _index_ordered(sort: SortOrder, rated: RatedFilter) -> bool:
    """Whether an index yields rows in this order (so a scan can stop early)."""
    if sort in _PREDICTED:  # the outer-joined score: sorted after the join
        return False
    if rated is RatedFilter.YES:
        return sort not in (SortOrder.NAME_ASC, SortOrder.NAME_DESC)
    if rated is RatedFilter.NO:
        return sort not in (SortOrder.RATING_ASC, SortOrder.RATING_DESC)
    return sort in (SortOrder.NAME_ASC, SortOrder.NAME_DESC)


def _base_query(
    stmt: Select,
    user_id: int,
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
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
    return _tag_conditions(stmt, model, include, exclude, style, image_id)


def _tag_conditions(
    stmt: Select,
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
    style: str,
    image_id: ColumnElement[int],
) -> Select:
    """``stmt`` restricted to the images (``image_id``) the tag filter keeps."""
    if model is None:
        return stmt
    for position, tag_id in enumerate(include):
        if style == _FILTER_FIRST and position == 0:
            stmt = stmt.where(image_id.in_(_tagged_with(model, tag_id)))
        else:
            stmt = stmt.where(_has_tag(model, tag_id, image_id))
    for tag_id in exclude:
        stmt = stmt.where(~_has_tag(model, tag_id, image_id))
    return stmt


def _rows(
    session: Session,
    user_id: int,
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
    sort: SortOrder,
    rated: RatedFilter,
    style: str,
    limit: int | None,
    offset: int,
    version: str = "",
) -> list[UserImage]:
    joined = rated is not RatedFilter.NO
    columns = select(
        Image.name,
        (Rating.rating if joined else null()).label("rating"),
        (Rating.rated_at if joined else null()).label("rated_at"),
        (Prediction.score if version else null()).label("predicted"),
        (Prediction.predicted_by if version else null()).label("predicted_by"),
    )
    stmt = _base_query(columns, user_id, model, include, exclude, rated, style, version=version)
    stmt = stmt.order_by(*_order(sort, rated, version))
    if limit is not None:
        stmt = stmt.limit(limit).offset(offset)
    return [UserImage(*row) for row in session.exec(stmt)]


def _predicted_rows(
    session: Session,
    user_id: int,
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
    sort: SortOrder,
    rated: RatedFilter,
    limit: int,
    offset: int,
    version: str,
    scored_style: str,
    unscored_style: str,
) -> list[UserImage]:
    """One page of a ``predicted-*`` listing, equal to :func:`_rows`'s (score
    in the sort's direction, ties by name, images without a current score
    last by name) without sorting every candidate: the user's current
    scores are walked in ``ix_predictions_user_score`` order, each row
    probing its rating and tags, until the page is full; only a page that
    reaches past the scored rows reads the unscored ones (by name, which
    the images' name index gives in order) and counts the scored ones to
    know where they start."""
    scored = _scored_query(
        select(*_columns(rated, True)), user_id, model, include, exclude, rated, scored_style, version
    )
    # Collecting a rare tag's images first (SQLite only) must not walk the
    # score index: ``score + 0`` is not indexed, so SQLite probes each
    # collected image's prediction by primary key and sorts the few found.
    by = Prediction.score + 0 if scored_style == _FILTER_FIRST else Prediction.score
    score = by.desc() if sort is SortOrder.PREDICTED_DESC else by.asc()
    stmt = scored.order_by(score, Image.name.asc()).limit(limit).offset(offset)
    rows = [UserImage(*row) for row in session.exec(stmt)]
    if len(rows) == limit:
        return rows
    if rows:  # the page began among the scored rows and ran past them
        scored_count = offset + len(rows)
    else:
        counted = _scored_query(
            select(func.count()), user_id, model, include, exclude, rated, scored_style, version, for_count=True
        )
        scored_count = session.exec(counted).one()
    current = exists().where(
        Prediction.user_id == user_id,
        Prediction.image_id == (Rating.image_id if rated is RatedFilter.YES else Image.id),
        Prediction.model_version == version,
    )
    unscored = _base_query(select(*_columns(rated, False)), user_id, model, include, exclude, rated, unscored_style)
    stmt = unscored.where(~current).order_by(Image.name.asc())
    stmt = stmt.limit(limit - len(rows)).offset(max(0, offset - scored_count))
    return rows + [UserImage(*row) for row in session.exec(stmt)]


def _columns(rated: RatedFilter, predicted: bool) -> list[ColumnElement]:
    """A listing row's columns: name, the user's rating and when (null for
    rated=no), and the prediction (null without one)."""
    joined = rated is not RatedFilter.NO
    return [
        Image.name,
        (Rating.rating if joined else null()).label("rating"),
        (Rating.rated_at if joined else null()).label("rated_at"),
        (Prediction.score if predicted else null()).label("predicted"),
        (Prediction.predicted_by if predicted else null()).label("predicted_by"),
    ]


def _scored_query(
    stmt: Select,
    user_id: int,
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
    rated: RatedFilter,
    style: str,
    version: str,
    for_count: bool = False,
) -> Select:
    """``stmt`` over the user's matching images that carry a score by model
    ``version``, driven from the user's range of ``ix_predictions_user_score``
    (rows of another version are skipped on the way)."""
    image_id = Prediction.image_id
    stmt = stmt.select_from(Prediction).where(Prediction.user_id == user_id, Prediction.model_version == version)
    if not for_count:
        stmt = stmt.join(Image, Image.id == image_id)
    if rated is RatedFilter.YES:
        stmt = stmt.join(Rating, and_(Rating.user_id == user_id, Rating.image_id == image_id))
    elif rated is RatedFilter.NO:
        stmt = stmt.where(~exists().where(Rating.user_id == user_id, Rating.image_id == image_id))
    elif not for_count:
        stmt = stmt.outerjoin(Rating, and_(Rating.user_id == user_id, Rating.image_id == image_id))
    return _tag_conditions(stmt, model, include, exclude, style, image_id)


def _tag_ids(session: Session, names: Sequence[str]) -> dict[str, int]:
    if not names:
        return {}
    return {name: tag_id for tag_id, name in session.exec(select(Tag.id, Tag.name).where(Tag.name.in_(names)))}


def _tagged_with(model: TaggerModel, tag_id: int) -> Select:
    """Ids of the images the model gave this tag at or above its threshold
    (one range scan of ``ix_image_tags_model_tag_score_image``)."""
    return select(ImageTag.image_id).where(
        ImageTag.tagger_model_id == model.id, ImageTag.tag_id == tag_id, ImageTag.score >= model.threshold
    )


def _has_tag(model: TaggerModel, tag_id: int, image_id: ColumnElement[int]) -> ColumnElement[bool]:
    """Whether the model gave the image this tag at or above its threshold
    (one probe of the ``image_tags`` primary key)."""
    scores = aliased(ImageTag)
    return exists().where(
        scores.image_id == image_id,
        scores.tagger_model_id == model.id,
        scores.tag_id == tag_id,
        scores.score >= model.threshold,
    )


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


_PREDICTED = (SortOrder.PREDICTED_DESC, SortOrder.PREDICTED_ASC)


def _keys(sort: SortOrder, rated: RatedFilter, version: str = "") -> list[_Key]:
    """The listing's sort keys, the last always the (unique) image name.
    The ``predicted-*`` orders need the prediction join (``version``);
    without a model every prediction is null, so they order by name."""
    if sort in _PREDICTED:
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


def _order(sort: SortOrder, rated: RatedFilter, version: str = "") -> list[ColumnElement]:
    return [key.ordering() for key in _keys(sort, rated, version)]


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
) -> Neighbours | None:
    """Where ``image`` stands in the listing :func:`user_data` returns for
    the same parameters, and the rows before and after it; None when it is
    not in that listing. Never reads the listing into Python. When an
    included tag is rarer than ``_WINDOW_MAX_ROWS`` images, the filtered set
    is numbered in one pass (window functions); otherwise the position is
    counted and the neighbours probed with keyset comparisons that an index
    on the sort keys serves."""
    model = current_tagger_model(session) if (tags.include or tags.exclude) else None
    ids = _tag_ids(session, (*tags.include, *tags.exclude))
    if tags.include and (model is None or any(name not in ids for name in tags.include)):
        return None
    include = [ids[name] for name in tags.include]
    exclude = [ids[name] for name in tags.exclude if name in ids]
    if model is None:
        include = exclude = []
    # The predicted orders sort by the serving ``version``'s scores (as
    # :func:`user_data` does); no other order needs the prediction join.
    version = version if sort in _PREDICTED else ""
    keys = _keys(sort, rated, version)
    if include:
        assert model is not None
        # Counted up to the bound, so a common tag costs no more than that.
        frequency = {tag_id: _frequency(session, model, tag_id, _WINDOW_MAX_ROWS) for tag_id in include}
        # The rarest tag first: the filter-first shape collects its index
        # range and probes the others (SQLite follows the shape; PostgreSQL
        # plans by its statistics either way).
        include.sort(key=frequency.__getitem__)
        if frequency[include[0]] < _WINDOW_MAX_ROWS:
            return _numbered(session, user_id, image, model, include, exclude, rated, keys, version)
    return _probed(session, user_id, image, model, include, exclude, rated, keys, version)


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
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
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
    numbered = _base_query(
        select(*windowed), user_id, model, include, exclude, rated, _FILTER_FIRST, version=version
    ).subquery()
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
    model: TaggerModel | None,
    include: Sequence[int],
    exclude: Sequence[int],
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
        return _base_query(
            columns, user_id, model, include, exclude, rated, _FILTER_FIRST, for_count=for_count, version=version
        )

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


# ---- tag list -------------------------------------------------------------


@dataclass(frozen=True)
class TagCounts:
    model: str  # "" before any tagger model
    tags: list[tuple[str, int]]  # by name, code-point order


def tag_counts(session: Session, prefix: str = "", user_id: int | None = None, limit: int = 0) -> TagCounts:
    """The current tagger model's tags on stored images at or above its
    threshold, with how many images carry each (with ``user_id``: of the
    user's rated images), sorted by name in code-point order; names start
    with ``prefix`` (lowercase: tag names are stored lowercase). One GROUP
    BY over ``ix_image_tags_model_tag_score_image``; ``limit`` 0: every tag."""
    model = current_tagger_model(session)
    if model is None:
        return TagCounts("", [])
    image_tags = select(ImageTag.tag_id, func.count().label("n")).where(
        ImageTag.tagger_model_id == model.id, ImageTag.score >= model.threshold
    )
    if prefix:
        # substr equality, not LIKE: no wildcard to escape, and the same
        # case rules on both databases.
        matching = select(Tag.id).where(func.substr(Tag.name, 1, len(prefix)) == prefix)
        image_tags = image_tags.where(ImageTag.tag_id.in_(matching))
    if user_id is not None:
        image_tags = image_tags.where(ImageTag.image_id.in_(select(Rating.image_id).where(Rating.user_id == user_id)))
    counted = image_tags.group_by(ImageTag.tag_id).subquery()
    # Code-point order: PostgreSQL's "C" collation; SQLite's BINARY compares
    # UTF-8 bytes, which is code-point order.
    collation = "C" if session.get_bind().dialect.name == "postgresql" else "BINARY"
    stmt = select(Tag.name, counted.c.n).join(counted, counted.c.tag_id == Tag.id).order_by(Tag.name.collate(collation))
    if limit:
        stmt = stmt.limit(limit)
    return TagCounts(model.model_id, [(name, count) for name, count in session.exec(stmt)])


# ---- training data --------------------------------------------------------


@dataclass(frozen=True)
class TrainingExample:
    image_id: int
    image: str
    user: str
    rating: float
    features: bytes | None  # float32 little-endian, when cached for the extractor


def training_examples_count(session: Session, user_id: int | None) -> int:
    stmt = select(func.count()).select_from(Rating)
    if user_id is not None:
        stmt = stmt.where(Rating.user_id == user_id)
    return session.exec(stmt).one()


def training_examples(
    session: Session, user_id: int | None, extractor_id: str, batch_size: int = 512
) -> Iterator[TrainingExample]:
    """Every rating of the user (``None``: of every user) with the image's
    cached feature vector from ``extractor_id``, in a stable order, fetched
    ``batch_size`` rows at a time."""
    feature = (
        and_(ImageFeatures.image_id == Rating.image_id, ImageFeatures.extractor_id == extractor_id)
        if extractor_id
        else literal(False)
    )
    stmt = (
        select(Image.id, Image.name, User.name, Rating.rating, ImageFeatures.vector)
        .select_from(Rating)
        .join(User, User.id == Rating.user_id)
        .join(Image, Image.id == Rating.image_id)
        .outerjoin(ImageFeatures, feature)
        .order_by(Rating.user_id, Rating.image_id)
    )
    if user_id is not None:
        stmt = stmt.where(Rating.user_id == user_id)
    result = session.exec(stmt.execution_options(yield_per=batch_size))
    for image_id, image, user, rating, vector in result:
        yield TrainingExample(image_id, image, user, rating, vector)
