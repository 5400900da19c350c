"""The listing of a user's dataset, GetUserData (tag filters, sorting,
rated/unrated, paging): which statements run, in which order, with which
parameters. Their SQL text is ``sql.py``.

Everything happens in SQL with bound parameters. GetUserData's listing is
plain SQL text on one connection (no ORM objects, few round trips; see
:func:`user_data_by_name`): an unfiltered first page is one statement that
finds the user and the serving model version itself and carries its
count; a deep page is counted first and, past the middle, read from the
other end and turned round; rated=all by date merges two index-ordered
streams (the user's ratings; the unrated images by date, each probing the
user's ratings) cut at offset+limit; rated=no is counted as every image less
the user's ratings. Tag filters are driven from the tag index: an included
tag is ``image_id IN (SELECT image_id FROM image_tags WHERE tagger_model_id
= :m AND tag_id = :t AND score >= :th)``, a range scan of
``ix_image_tags_model_tag_score_image``, or an EXISTS probe of the
``image_tags`` primary key; each excluded tag is a NOT EXISTS probe. A
user's ratings are reached through the ``(user_id, ...)`` indexes of
``ratings``. The neighbours of an image (``neighbours.py``) are built with
SQLAlchemy Core over the same conditions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import Connection, Row
from sqlmodel import Session

from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.tagfilter import parse_filter
from tagrate_common.userdata import MAX_PAGE, RatedFilter, SortOrder, TagFilter

from ..models import ALL_SUBJECT
from ..tags import filtersql, members
from ..tags.filtersql import Cond, FilterSQL, frequency_sql
from . import bitsets, driver
from .sql import (
    FILTER_FIRST,
    FIXED_COLUMNS,
    PREDICTED,
    SCAN,
    SUBJECT_BY_ID,
    SUBJECT_BY_NAME,
    UNFILTERED_COUNT,
    Spec,
    by_name,
    count_sql,
    deep_sql,
    page_sql,
    preamble_sql,
    scored_sql,
)

# The user id of someone who has not rated yet: matches no rating row.
NO_USER = -1


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


class UserImage(NamedTuple):
    """One row of a listing. A named tuple rather than a frozen dataclass:
    a page builds up to a thousand of them, at a third of the cost."""

    image: str
    rating: float | None  # None: not rated by the user
    rated_at: datetime | None
    predicted: float | None = None  # None: no current prediction
    predicted_by: str | None = None  # "personal" | "global"


# A listing row as the database hands it back: a UserImage whose rated_at
# is as stored (SQLite: naive UTC text; PostgreSQL: a timestamptz).
StoredRow = tuple[str, float | None, object, float | None, str | None]


class UserDataPage:
    """One page of a listing and the matches over all pages. The rows stay
    as stored: GetUserData writes them into its reply as they are
    (:func:`stored_timestamp`), without a datetime and a UserImage per row,
    which cost about half a millisecond a page of 60; ``images`` gives them
    as UserImages."""

    __slots__ = ("rows", "total")

    def __init__(self, rows: Sequence[StoredRow], total: int) -> None:
        self.rows = rows
        self.total = total

    @property
    def images(self) -> list[UserImage]:
        return [UserImage(name, rating, _utc(at), predicted, by) for name, rating, at, predicted, by in self.rows]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserDataPage):
            return NotImplemented
        return (self.images, self.total) == (other.images, other.total)

    def __repr__(self) -> str:
        return f"UserDataPage({self.images!r}, {self.total})"


def user_data(
    session: Session,
    user_id: int,
    tags: TagFilter = TagFilter(),
    sort: SortOrder = SortOrder.DATE_DESC,
    rated: RatedFilter = RatedFilter.YES,
    page: Paging = Paging(),
    version: str = "",
) -> UserDataPage:
    """One page of a user's dataset (see :func:`user_data_by_name`, which
    GetUserData calls: it also resolves the user and the serving model
    ``version``, in the same round trip as everything else it needs)."""
    conn = session.connection()
    flt = parse_filter(tags)
    model, row = None, None
    if flt:
        names = flt.names
        row = driver.execute(conn, preamble_sql(SUBJECT_BY_ID, len(names), rated, counts=False), {
            "user_id": user_id, "all": ALL_SUBJECT, **{f"tag{n}": name for n, name in enumerate(names)}
        }).one()  # fmt: skip
        model = (row.model_id, row.threshold) if row.model_id is not None else None
    resolved = _with_members(filtersql.resolved(flt, row[FIXED_COLUMNS:] if row is not None else ()), row, model)
    keys = _keys(row, flt.names)
    return _listing(conn, user_id, version, model, resolved, sort, rated, page, keys=keys)


def user_data_by_name(
    conn: Connection,
    user: str,
    tags: TagFilter = TagFilter(),
    sort: SortOrder = SortOrder.DATE_DESC,
    rated: RatedFilter = RatedFilter.YES,
    page: Paging = Paging(),
    use_members: bool = True,
) -> UserDataPage:
    """One page of ``user``'s dataset; for an unknown user NotFound with
    ``rated`` yes, else every stored image unrated (a newcomer's library).

    An image matches when the current tagger model scored every included
    tag at or above its threshold and no excluded tag. An included tag
    nobody has (or any include before a tagger model exists) matches
    nothing; unknown excluded tags are ignored. The "date" of an unrated
    image is when it was stored; unrated images sort last by rating; ties
    are broken by image name so pages are stable. Each row carries the
    user's stored prediction by the model serving the user (their own
    trained snapshot's version, else the global one's; see ``predictions/scoring.py``),
    which the ``predicted-*`` orders sort by, images without one last.

    Round trips: an unfiltered page near the start is one statement that
    looks up the user and the serving version inside it and carries its
    count (a user's ratings; every image; rated=no as their difference).
    Otherwise one resolves the user, the serving version, the tagger model
    and the tag ids, and counts the rows when no tag filters apply; one
    more reads the page (a page of a tag-filtered listing near its start
    also carries its count on PostgreSQL; otherwise the count comes first)."""
    flt = parse_filter(tags)
    names = flt.names
    params: dict[str, object] = {"subject": user, "all": ALL_SUBJECT}
    if not flt and page.page and page.page * page.limit <= _COUNT_WITH_PAGE_MAX:
        # An unfiltered page near the start: one statement, which finds the
        # user and the serving version itself and carries the count. An
        # empty answer (an unknown user, a page past the end) is told apart
        # the long way.
        spec = Spec(conn.dialect.name == "sqlite", "(inline)", FilterSQL(), sort, rated)
        offset = (page.page - 1) * page.limit
        if sort in PREDICTED:
            # The scored rows only: enough when they fill the page (no
            # version, or a page reaching past them, takes the long way).
            statement = scored_sql(spec, SCAN, counted=UNFILTERED_COUNT[rated])
        else:
            # The guard: with no such user, unrated rows would be every image.
            statement = page_sql(spec, FILTER_FIRST, counted=UNFILTERED_COUNT[rated], guard=":u IS NOT NULL")
        sql = by_name(statement)
        rows, total = _fetch_counted(conn, sql, {**params, "lim": page.limit, "off": offset, "n": offset + page.limit})
        if rows if sort not in PREDICTED else len(rows) == page.limit:
            return UserDataPage(rows, total)
    elif not flt and page.page and sort not in PREDICTED and conn.dialect.name == "sqlite":
        # A deep unfiltered page on SQLite: one statement too, which counts
        # first and reads the page from whichever end is nearer. (PostgreSQL
        # spends longer planning that statement, with both branches and the
        # lookups in it, than the round trip it saves: there, the lookups
        # and the count come first and the page is a plain statement.)
        spec = Spec(True, "(inline)", FilterSQL(), sort, rated)
        offset = (page.page - 1) * page.limit
        sql = by_name(deep_sql(spec))
        rows, total = _fetch_counted(conn, sql, {**params, "lim": page.limit, "off": offset, "n": offset + page.limit})
        if rows:
            return UserDataPage(rows[::-1] if total - offset - page.limit < offset else rows, total)
    params.update({f"tag{n}": name for n, name in enumerate(names)})
    sqlite = conn.dialect.name == "sqlite"
    # Counted up front when they are the total (no tag filter) or what a
    # SQLite plan is steered by (the candidates of an included tag).
    counts = not flt or (sqlite and any(not c.negate and c.terms for c in flt.conditions))
    # A user who has not rated yet (not in the database) has no ratings: their
    # rated=no and rated=all listings are every stored image, unrated.
    newcomer = rated is not RatedFilter.YES
    row = driver.execute(conn, preamble_sql(SUBJECT_BY_NAME, len(names), rated, counts, newcomer), params).one_or_none()
    if row is None:
        raise NotFound(f"there is no user '{user}'; a user is created by their first rating", "user_not_found")
    version = row.mine or row.everyone or ""
    model = (row.model_id, row.threshold) if row.model_id is not None else None
    resolved = _with_members(filtersql.resolved(flt, row[FIXED_COLUMNS:]), row if use_members else None, model)
    known = _Counts(row.rated_count, row.image_count) if counts else _Counts()
    user_id = row.user_id if row.user_id is not None else NO_USER
    return _listing(conn, user_id, version, model, resolved, sort, rated, page, known, _keys(row, names))


def _with_members(flt: FilterSQL | None, row: Row[Any] | None, model: tuple[int, float] | None) -> FilterSQL | None:
    """The filter reading its any-source tags from ``tag_members`` when the
    preamble ``row`` says that table serves the current tagger model (None:
    the source tables, as before that table; setting ``tag_members``)."""
    if flt is None or row is None or not members.usable(row.members_model, row.members_threshold, model):
        return flt
    return flt.with_members()


def _keys(row: Row[Any] | None, names: Sequence[str]) -> bitsets.Keys | None:
    if row is None or not names or row.epoch is None:
        return None
    return bitsets.keys(row, names, FIXED_COLUMNS, filtersql.COLUMNS_PER_TAG)


@dataclass(frozen=True)
class _Counts:
    rated: int | None = None  # the user's ratings
    images: int | None = None  # every stored image


def _listing(
    conn: Connection,
    user_id: int,
    version: str,
    model: tuple[int, float] | None,
    flt: FilterSQL | None,
    sort: SortOrder,
    rated: RatedFilter,
    page: Paging,
    known: _Counts = _Counts(),
    keys: bitsets.Keys | None = None,
) -> UserDataPage:
    if flt is None:  # an included tag nobody has
        return UserDataPage([], 0)
    sqlite = conn.dialect.name == "sqlite"
    params: dict[str, object] = {"u": user_id, "v": version, **filtersql.model_params(model), **flt.params}

    def counted(what: str) -> int:
        value = known.rated if what == "rated" else known.images
        if value is None:
            if what == "rated":
                sql = "SELECT count(*) FROM ratings WHERE user_id = :u"
            else:
                sql = "SELECT count(*) FROM images"
            value = driver.execute(conn, sql, params).scalar_one()
        return value

    total: int | None = None
    # Any-source tag filters are counted from in-memory bitsets (bitsets.py).
    bits = bitsets.evaluate(flt, rated, user_id, conn, keys) if flt and page.page and keys else None
    if bits is not None:
        total = bits.total
    if not flt:
        if rated is RatedFilter.YES:
            total = counted("rated")
        elif rated is RatedFilter.NO:  # exact: a rating's image is a stored image (foreign key)
            total = counted("images") - counted("rated")
        else:
            total = counted("images")

    # SQLite plans by the query's shape and knows nothing of how common each
    # tag is, so the shape is chosen here (see FILTER_FIRST and SCAN).
    # PostgreSQL turns both shapes into the same semi-joins (see below).
    steer = bool(flt.drivers) and sqlite
    count_style, candidates = FILTER_FIRST, 0
    if steer:
        # Candidates: the rows before tag filtering (the user's ratings, or
        # every stored image; for rated=no every image is the estimate). An
        # included tag rarer than them drives the query, the rarest first;
        # otherwise the candidates are walked and each probes its tags.
        candidates = counted("rated") if rated is RatedFilter.YES else counted("images")
        frequency = bits.frequency if bits is not None else _frequencies(conn, params, flt.drivers, candidates)
        flt = flt.driven_by(frequency.__getitem__)
        if frequency[flt.conds[0]] >= candidates:
            count_style = SCAN
    collect = False
    if not sqlite and flt.drivers:
        # PostgreSQL misjudges a tag's images from several sources (a default
        # 200 rows) or an implied tag's (a generic per-tag figure): the rarest
        # drives, and a rare one's matches are sorted (``Spec.collect``).
        frequency = bits.frequency if bits is not None else {}
        frequency = frequency or _frequencies(conn, params, flt.drivers, _PG_FREQUENCY_CAP)
        flt = flt.driven_by(frequency.__getitem__)
        collect = frequency[flt.conds[0]] < _PG_FREQUENCY_CAP
    spec = Spec(sqlite, version, flt, sort, rated, collect)

    if not page.page:
        rows = _fetch(conn, page_sql(spec, count_style, paged=False), params)
        return UserDataPage(rows, len(rows))
    offset = (page.page - 1) * page.limit
    params.update(lim=page.limit, off=offset, n=offset + page.limit)
    if total is None and not sqlite and offset + page.limit <= _COUNT_WITH_PAGE_MAX:
        # Near the start the page is cheap whatever the total: read both in
        # one statement (a page past the end has no row to carry the count).
        counted_page = page_sql(spec, FILTER_FIRST, counted=count_sql(spec, FILTER_FIRST))
        rows, total = _fetch_counted(conn, counted_page, params)
        if rows:
            return UserDataPage(rows, total)
        total = None
    if total is None:
        total = driver.execute(conn, count_sql(spec, count_style), params).scalar_one()
    if offset >= total:  # past the end: nothing to fetch
        return UserDataPage([], total)
    # Walking the sort order's index and probing each row's tags stops after
    # offset+limit matches: cheaper than collecting every match and sorting
    # when matches are dense and the page is near the start. The count says
    # how dense they are.
    page_style = FILTER_FIRST
    if steer and _index_ordered(sort, rated) and (offset + page.limit) * candidates <= _SCAN_BUDGET * total:
        page_style = SCAN
    if sort in PREDICTED and version:
        scored_style = SCAN if not steer or (offset + page.limit) * candidates <= _SCAN_BUDGET * total else FILTER_FIRST
        return UserDataPage(_predicted_page(conn, spec, params, scored_style, page_style, page.limit, offset), total)
    after = total - offset - page.limit  # rows after the page
    if after < offset:
        # Nearer the end: read the rows from the other end (in the reversed
        # order, skipping the ones after the page) and turn them round.
        params.update(lim=min(page.limit, total - offset), off=max(0, after), n=total - offset)
        rows = _fetch(conn, page_sql(spec, page_style, reverse=True), params)
        return UserDataPage(rows[::-1], total)
    return UserDataPage(_fetch(conn, page_sql(spec, page_style), params), total)


# PostgreSQL's driving tags counted up to this; a rarer one's matches are sorted.
_PG_FREQUENCY_CAP = 2000

# A tag-filtered page ending at most this far into its listing is read
# together with its count (PostgreSQL): cheap enough to read forwards.
_COUNT_WITH_PAGE_MAX = 1000


def _frequencies(conn: Connection, params: dict[str, object], drivers: Sequence[Cond], cap: int) -> dict[Cond, int]:
    """How many images have each driving tag, counted up to ``cap`` (so a
    very common tag costs no more than the candidates do): enough to tell
    which tag is rarest and whether it is rarer than the candidates. One
    statement for every tag."""
    counts = [frequency_sql(cond, n) for n, cond in enumerate(drivers)]
    row = driver.execute(conn, f"SELECT {', '.join(counts)}", {**params, "cap": cap}).one()
    return dict(zip(drivers, row, strict=True))


def _index_ordered(sort: SortOrder, rated: RatedFilter) -> bool:
    """Whether an index yields rows in this order (so a scan can stop early)."""
    if sort in PREDICTED:  # the outer-joined score: sorted after the join
        return False
    if rated is RatedFilter.YES:
        return sort not in (SortOrder.NAME_ASC, SortOrder.NAME_DESC)
    if rated is RatedFilter.NO:
        return sort not in (SortOrder.RATING_ASC, SortOrder.RATING_DESC)
    return sort in (SortOrder.NAME_ASC, SortOrder.NAME_DESC, SortOrder.DATE_DESC, SortOrder.DATE_ASC)


def _predicted_page(
    conn: Connection,
    spec: Spec,
    params: dict[str, object],
    scored_style: str,
    unscored_style: str,
    limit: int,
    offset: int,
) -> list[StoredRow]:
    """One page of a ``predicted-*`` listing (score in the sort's direction,
    ties by name, images without a current score last by name) without
    sorting every candidate: the user's current scores are walked in
    ``ix_predictions_user_score`` order, each row probing its rating and
    tags, until the page is full; only a page that reaches past the scored
    rows reads the unscored ones (by name, which the images' name index
    gives in order) and counts the scored ones to know where they start."""
    rows = _fetch(conn, scored_sql(spec, scored_style), params)
    if len(rows) == limit:
        return rows
    if rows:  # the page began among the scored rows and ran past them
        scored_count = offset + len(rows)
    else:
        scored_count = driver.execute(conn, scored_sql(spec, scored_style, count=True), params).scalar_one()
    tail = {**params, "lim": limit - len(rows), "off": max(0, offset - scored_count)}
    return rows + _fetch(conn, page_sql(spec, unscored_style, unscored=True), tail)


def _utc(value: object) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite hands back the
    naive UTC text it stores; PostgreSQL a timestamptz)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def stored_timestamp(value: object) -> Timestamp | None:
    """A stored timestamp (as :func:`_utc` takes it) as a protobuf
    Timestamp, the same as ``to_timestamp(_utc(value))`` without the aware
    datetime and ``Timestamp.FromDatetime`` in between (a tenth of their
    cost; a page converts one per row)."""
    if value is None:
        return None
    if isinstance(value, str):
        since = datetime.fromisoformat(value).replace(tzinfo=None) - _EPOCH
    else:
        assert isinstance(value, datetime)
        since = value - (_EPOCH if value.tzinfo is None else _EPOCH_UTC)
    return Timestamp(seconds=since.days * 86_400 + since.seconds, nanos=since.microseconds * 1000)


def _fetch(conn: Connection, sql: str, params: dict[str, object]) -> list[StoredRow]:
    return [row[:5] for row in driver.execute(conn, sql, params)]  # type: ignore[misc]


def _fetch_counted(conn: Connection, sql: str, params: dict[str, object]) -> tuple[list[StoredRow], int]:
    """Rows of a statement whose last column is the total; (rows, 0) when empty."""
    result = driver.execute(conn, sql, params).all()
    return [row[:5] for row in result], (result[0][5] if result else 0)  # type: ignore[misc]


# Most rows the scan strategy may expect to walk before it has offset+limit matches.
_SCAN_BUDGET = 5000
