"""Read queries over a user's dataset: GetUserData (tag filters, sorting,
rated/unrated, paging) and the training examples StreamTrainingData sends.

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
``ratings``. The neighbours of an image (:func:`neighbours`) are built with
SQLAlchemy Core over the same conditions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, Select, and_, exists, func, literal, null, or_, text
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from tagrate_common.errors import InvalidArgument, NotFound
from tagrate_common.userdata import MAX_PAGE, RatedFilter, SortOrder, TagFilter

from ..crud import current_tagger_model
from ..models import ALL_SUBJECT, Image, ImageFeatures, ImageTag, Prediction, Rating, Tag, TaggerModel, User


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
    """One page of a user's dataset (see :func:`user_data_by_name`, which
    GetUserData calls: it also resolves the user and the serving model
    ``version``, in the same round trip as everything else it needs)."""
    conn = session.connection()
    model, ids = None, {}
    if tags.include or tags.exclude:
        names = (*tags.include, *tags.exclude)
        row = conn.execute(text(_preamble_sql(_SUBJECT_BY_ID, len(names), rated, counts=False)), {
            "user_id": user_id, "all": ALL_SUBJECT, **{f"tag{n}": name for n, name in enumerate(names)}
        }).one()  # fmt: skip
        model = (row.model_id, row.threshold) if row.model_id is not None else None
        ids = {name: row[_FIXED_COLUMNS + n] for n, name in enumerate(names) if row[_FIXED_COLUMNS + n] is not None}
    return _listing(conn, user_id, version, model, ids, tags, sort, rated, page)


def user_data_by_name(
    conn: Connection,
    user: str,
    tags: TagFilter = TagFilter(),
    sort: SortOrder = SortOrder.DATE_DESC,
    rated: RatedFilter = RatedFilter.YES,
    page: Paging = Paging(),
) -> UserDataPage:
    """One page of ``user``'s dataset; NotFound for an unknown user.

    An image matches when the current tagger model scored every included
    tag at or above its threshold and no excluded tag. An included tag
    nobody has (or any include before a tagger model exists) matches
    nothing; unknown excluded tags are ignored. The "date" of an unrated
    image is when it was stored; unrated images sort last by rating; ties
    are broken by image name so pages are stable. Each row carries the
    user's stored prediction by the model serving the user (their own
    trained snapshot's version, else the global one's; see ``scoring.py``),
    which the ``predicted-*`` orders sort by, images without one last.

    Round trips: an unfiltered page near the start is one statement that
    looks up the user and the serving version inside it and carries its
    count (a user's ratings; every image; rated=no as their difference).
    Otherwise one resolves the user, the serving version, the tagger model
    and the tag ids, and counts the rows when no tag filters apply; one
    more reads the page (a page of a tag-filtered listing near its start
    also carries its count on PostgreSQL; otherwise the count comes first)."""
    names = (*tags.include, *tags.exclude)
    params: dict[str, object] = {"subject": user, "all": ALL_SUBJECT}
    if not names and page.page and page.page * page.limit <= _COUNT_WITH_PAGE_MAX:
        # An unfiltered page near the start: one statement, which finds the
        # user and the serving version itself and carries the count. An
        # empty answer (an unknown user, a page past the end) is told apart
        # the long way.
        spec = _Spec(conn.dialect.name == "sqlite", "(inline)", [], [], sort, rated)
        offset = (page.page - 1) * page.limit
        if sort in _PREDICTED:
            # The scored rows only: enough when they fill the page (no
            # version, or a page reaching past them, takes the long way).
            page_sql = _scored_sql(spec, _SCAN, counted=_UNFILTERED_COUNT[rated])
        else:
            # The guard: with no such user, unrated rows would be every image.
            page_sql = _page_sql(spec, _FILTER_FIRST, counted=_UNFILTERED_COUNT[rated], guard=":u IS NOT NULL")
        sql = _by_name(page_sql)
        rows, total = _fetch_counted(conn, sql, {**params, "lim": page.limit, "off": offset, "n": offset + page.limit})
        if rows if sort not in _PREDICTED else len(rows) == page.limit:
            return UserDataPage(rows, total)
    elif not names and page.page and sort not in _PREDICTED and conn.dialect.name == "sqlite":
        # A deep unfiltered page on SQLite: one statement too, which counts
        # first and reads the page from whichever end is nearer. (PostgreSQL
        # spends longer planning that statement, with both branches and the
        # lookups in it, than the round trip it saves: there, the lookups
        # and the count come first and the page is a plain statement.)
        spec = _Spec(True, "(inline)", [], [], sort, rated)
        offset = (page.page - 1) * page.limit
        sql = _by_name(_deep_sql(spec))
        rows, total = _fetch_counted(conn, sql, {**params, "lim": page.limit, "off": offset, "n": offset + page.limit})
        if rows:
            return UserDataPage(rows[::-1] if total - offset - page.limit < offset else rows, total)
    params.update({f"tag{n}": name for n, name in enumerate(names)})
    sqlite = conn.dialect.name == "sqlite"
    # Counted up front when they are the total (no tag filter) or what a
    # SQLite plan is steered by (the candidates of an included tag).
    counts = not names or (sqlite and bool(tags.include))
    row = conn.execute(text(_preamble_sql(_SUBJECT_BY_NAME, len(names), rated, counts)), params).one_or_none()
    if row is None:
        raise NotFound(f"there is no user '{user}'; a user is created by their first rating", "user_not_found")
    version = row.mine or row.everyone or ""
    model = (row.model_id, row.threshold) if row.model_id is not None else None
    ids = {name: row[_FIXED_COLUMNS + n] for n, name in enumerate(names) if row[_FIXED_COLUMNS + n] is not None}
    known = _Counts(row.rated_count, row.image_count) if counts else _Counts()
    return _listing(conn, row.user_id, version, model, ids, tags, sort, rated, page, known)


_UNFILTERED_COUNT = {
    RatedFilter.YES: "SELECT count(*) FROM ratings c WHERE c.user_id = :u",
    # Exact: every rating's image is a stored image (foreign key).
    RatedFilter.NO: "SELECT (SELECT count(*) FROM images) - (SELECT count(*) FROM ratings c WHERE c.user_id = :u)",
    RatedFilter.ALL: "SELECT count(*) FROM images",
}


def _deep_sql(spec: _Spec) -> str:
    """An unfiltered page counted and read in one statement: the count
    (once, in a CTE) decides which of two branches runs, the page read
    forwards or, past the middle, in the reversed order (the caller turns
    those rows round); only the chosen branch's one-time condition holds.
    Every row carries the count; a page past the end has no row."""
    count = _UNFILTERED_COUNT[spec.rated]
    forward = _page_sql(
        spec,
        _FILTER_FIRST,
        counted="SELECT total_rows FROM counted",
        guard=":u IS NOT NULL",
    )
    # Whether the forward branch runs is decided in its LIMIT, not its WHERE:
    # SQLite evaluates a WHERE term holding a subquery on every row it
    # walks, so a branch that does not run would still walk the index up to
    # the offset; a LIMIT of 0 stops it before its first row.
    assert forward.endswith(" LIMIT :lim OFFSET :off")
    forward = forward.removesuffix(" LIMIT :lim OFFSET :off") + (
        " LIMIT (SELECT CASE WHEN total_rows - :off - :lim >= :off THEN :lim ELSE 0 END FROM counted) OFFSET :off"
    )
    backward = _page_sql(
        spec,
        _FILTER_FIRST,
        reverse=True,
        counted="SELECT total_rows FROM counted",
        guard=":u IS NOT NULL",
    )
    # The reversed page: the rows after it skipped, never a negative LIMIT
    # (SQLite reads one as no limit; PostgreSQL refuses it); 0 when the
    # forward branch runs or the page is past the end.
    limit = (
        "(SELECT CASE WHEN total_rows - :off - :lim >= :off OR total_rows <= :off THEN 0 "
        "WHEN total_rows - :off < :lim THEN total_rows - :off ELSE :lim END FROM counted)"
    )
    skip = "(SELECT CASE WHEN total_rows - :off - :lim > 0 THEN total_rows - :off - :lim ELSE 0 END FROM counted)"
    assert backward.endswith(" LIMIT :lim OFFSET :off")
    backward = backward.removesuffix(" LIMIT :lim OFFSET :off") + f" LIMIT {limit} OFFSET {skip}"
    # The merged streams (rated=all by date) read up to the page's far end.
    backward = backward.replace(
        "LIMIT :n", "LIMIT (SELECT CASE WHEN total_rows > :off THEN total_rows - :off ELSE 0 END FROM counted)"
    )
    return (
        f"WITH counted AS MATERIALIZED (SELECT ({count}) AS total_rows) "
        f"SELECT * FROM ({forward}) f UNION ALL SELECT * FROM ({backward}) b"
    )


_USER_BY_NAME = "(SELECT w.id FROM users w WHERE w.name = :subject)"
_VERSION_BY_NAME = (
    "coalesce((SELECT s.model_version FROM trained_snapshots s WHERE s.subject = :subject AND s.model_version <> ''), "
    "(SELECT s.model_version FROM trained_snapshots s WHERE s.subject = :all AND s.model_version <> ''))"
)


def _by_name(sql: str) -> str:
    """``sql`` with the user id and the serving version looked up inside it
    (each lookup runs once per statement on both databases)."""
    return re.sub(r":v\b", _VERSION_BY_NAME, re.sub(r":u\b", _USER_BY_NAME, sql))


@dataclass(frozen=True)
class _Counts:
    rated: int | None = None  # the user's ratings
    images: int | None = None  # every stored image


# The preamble's columns before the tag ids.
_FIXED_COLUMNS = 7
_SUBJECT_BY_NAME = "u.name = :subject"
_SUBJECT_BY_ID = "u.id = :user_id"


def _preamble_sql(where: str, tag_count: int, rated: RatedFilter, counts: bool) -> str:
    """One row: the user's id, the versions serving the user and everyone,
    the current tagger model, the counts the listing needs (NULL when not
    asked for) and the ids of the named tags (NULL: no such tag)."""
    latest = "FROM tagger_models ORDER BY registered_at DESC, id DESC LIMIT 1"
    rated_count = "(SELECT count(*) FROM ratings c WHERE c.user_id = u.id)"
    image_count = "(SELECT count(*) FROM images)"
    columns = [
        "u.id AS user_id",
        "(SELECT s.model_version FROM trained_snapshots s WHERE s.subject = u.name AND s.model_version <> '') AS mine",
        "(SELECT s.model_version FROM trained_snapshots s WHERE s.subject = :all AND s.model_version <> '') "
        "AS everyone",
        f"(SELECT id {latest}) AS model_id" if tag_count else "NULL AS model_id",
        f"(SELECT threshold {latest}) AS threshold" if tag_count else "NULL AS threshold",
        f"{rated_count if counts and rated is not RatedFilter.ALL else 'NULL'} AS rated_count",
        f"{image_count if counts and rated is not RatedFilter.YES else 'NULL'} AS image_count",
    ]
    columns += [f"(SELECT t.id FROM tags t WHERE t.name = :tag{n})" for n in range(tag_count)]
    return f"SELECT {', '.join(columns)} FROM users u WHERE {where}"


@dataclass(frozen=True)
class _Spec:
    """Everything a listing statement is written from."""

    sqlite: bool
    version: str
    include: list[int]  # tag ids, the one driving a filter-first plan first
    exclude: list[int]
    sort: SortOrder
    rated: RatedFilter

    @property
    def filtered(self) -> bool:
        return bool(self.include or self.exclude)


def _listing(
    conn: Connection,
    user_id: int,
    version: str,
    model: tuple[int, float] | None,
    ids: dict[str, int],
    tags: TagFilter,
    sort: SortOrder,
    rated: RatedFilter,
    page: Paging,
    known: _Counts = _Counts(),
) -> UserDataPage:
    if tags.include and (model is None or any(name not in ids for name in tags.include)):
        return UserDataPage([], 0)
    include = [ids[name] for name in tags.include]
    exclude = [ids[name] for name in tags.exclude if name in ids]
    if model is None:
        include = exclude = []
    sqlite = conn.dialect.name == "sqlite"
    params: dict[str, object] = {"u": user_id, "v": version}
    if model is not None:
        params.update(m=model[0], th=model[1])

    def counted(what: str) -> int:
        value = known.rated if what == "rated" else known.images
        if value is None:
            if what == "rated":
                sql = "SELECT count(*) FROM ratings WHERE user_id = :u"
            else:
                sql = "SELECT count(*) FROM images"
            value = conn.execute(text(sql), params).scalar_one()
        return value

    total: int | None = None
    if not include and not exclude:
        if rated is RatedFilter.YES:
            total = counted("rated")
        elif rated is RatedFilter.NO:  # exact: a rating's image is a stored image (foreign key)
            total = counted("images") - counted("rated")
        else:
            total = counted("images")

    # SQLite plans by the query's shape and knows nothing of how common each
    # tag is, so the shape is chosen here (see _FILTER_FIRST and _SCAN).
    # PostgreSQL turns both shapes into the same semi-joins and chooses by
    # its own per-tag statistics, so it needs none of this.
    steer = bool(include) and sqlite
    count_style, candidates = _FILTER_FIRST, 0
    if steer:
        # Candidates: the rows before tag filtering (the user's ratings, or
        # every stored image; for rated=no every image is the estimate). An
        # included tag rarer than them drives the query, the rarest first;
        # otherwise the candidates are walked and each probes its tags.
        candidates = counted("rated") if rated is RatedFilter.YES else counted("images")
        frequency = _frequencies(conn, params, include, candidates)
        include.sort(key=frequency.__getitem__)
        if frequency[include[0]] >= candidates:
            count_style = _SCAN
    for n, tag_id in enumerate((*include, *exclude)):
        params[f"t{n}"] = tag_id
    spec = _Spec(sqlite, version, include, exclude, sort, rated)

    if not page.page:
        rows = _fetch(conn, _page_sql(spec, count_style, paged=False), params)
        return UserDataPage(rows, len(rows))
    offset = (page.page - 1) * page.limit
    params.update(lim=page.limit, off=offset, n=offset + page.limit)
    if total is None and not sqlite and offset + page.limit <= _COUNT_WITH_PAGE_MAX:
        # Near the start the page is cheap whatever the total: read both in
        # one statement (a page past the end has no row to carry the count).
        counted_page = _page_sql(spec, _FILTER_FIRST, counted=_count_sql(spec, _FILTER_FIRST))
        rows, total = _fetch_counted(conn, counted_page, params)
        if rows:
            return UserDataPage(rows, total)
        total = None
    if total is None:
        total = conn.execute(text(_count_sql(spec, count_style)), params).scalar_one()
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
        scored_style = (
            _SCAN if not steer or (offset + page.limit) * candidates <= _SCAN_BUDGET * total else _FILTER_FIRST
        )
        return UserDataPage(_predicted_page(conn, spec, params, scored_style, page_style, page.limit, offset), total)
    after = total - offset - page.limit  # rows after the page
    if after < offset:
        # Nearer the end: read the rows from the other end (in the reversed
        # order, skipping the ones after the page) and turn them round.
        params.update(lim=min(page.limit, total - offset), off=max(0, after), n=total - offset)
        rows = _fetch(conn, _page_sql(spec, page_style, reverse=True), params)
        return UserDataPage(rows[::-1], total)
    return UserDataPage(_fetch(conn, _page_sql(spec, page_style), params), total)


# A tag-filtered page ending at most this far into its listing is read
# together with its count (PostgreSQL): cheap enough to read forwards.
_COUNT_WITH_PAGE_MAX = 1000


def _frequencies(conn: Connection, params: dict[str, object], include: Sequence[int], cap: int) -> dict[int, int]:
    """How many images have each tag, counted up to ``cap`` (so a very
    common tag costs no more than the candidates do): enough to tell which
    tag is rarest and whether it is rarer than the candidates. One
    statement for every tag."""
    counts = [
        f"(SELECT count(*) FROM (SELECT image_id FROM image_tags WHERE tagger_model_id = :m AND tag_id = :f{n} "
        f"AND score >= :th LIMIT :cap) f{n})"
        for n in range(len(include))
    ]
    values = {**params, "cap": cap, **{f"f{n}": tag_id for n, tag_id in enumerate(include)}}
    row = conn.execute(text(f"SELECT {', '.join(counts)}"), values).one()
    return dict(zip(include, row, strict=True))


def _index_ordered(sort: SortOrder, rated: RatedFilter) -> bool:
    """Whether an index yields rows in this order (so a scan can stop early)."""
    if sort in _PREDICTED:  # the outer-joined score: sorted after the join
        return False
    if rated is RatedFilter.YES:
        return sort not in (SortOrder.NAME_ASC, SortOrder.NAME_DESC)
    if rated is RatedFilter.NO:
        return sort not in (SortOrder.RATING_ASC, SortOrder.RATING_DESC)
    return sort in (SortOrder.NAME_ASC, SortOrder.NAME_DESC, SortOrder.DATE_DESC, SortOrder.DATE_ASC)


def _tags_sql(spec: _Spec, image: str, style: str) -> str:
    """`` AND ...`` for each tag condition on the image id ``image``: the
    first included tag as ``IN`` its index range when filtering first, the
    others as probes of the ``image_tags`` primary key."""
    parts = []
    for n in range(len(spec.include) + len(spec.exclude)):
        probe = (
            f"EXISTS (SELECT 1 FROM image_tags x{n} WHERE x{n}.image_id = {image} AND x{n}.tagger_model_id = :m "
            f"AND x{n}.tag_id = :t{n} AND x{n}.score >= :th)"
        )
        if n >= len(spec.include):
            parts.append(f"NOT {probe}")
        elif n == 0 and style == _FILTER_FIRST:
            parts.append(
                f"{image} IN (SELECT image_id FROM image_tags WHERE tagger_model_id = :m AND tag_id = :t0 "
                f"AND score >= :th)"
            )
        else:
            parts.append(probe)
    return "".join(f" AND {part}" for part in parts)


_UNRATED = "NOT EXISTS (SELECT 1 FROM ratings q WHERE q.user_id = :u AND q.image_id = {image})"


def _count_sql(spec: _Spec, style: str) -> str:
    """The matches of a (tag-filtered) listing: a user's ratings are
    counted without the images table, unrated ones by an anti-probe."""
    if spec.rated is RatedFilter.YES:
        return f"SELECT count(*) FROM ratings c WHERE c.user_id = :u{_tags_sql(spec, 'c.image_id', style)}"
    where = _UNRATED.format(image="c.id") if spec.rated is RatedFilter.NO else "1 = 1"
    return f"SELECT count(*) FROM images c WHERE {where}{_tags_sql(spec, 'c.id', style)}"


def _predicted_sql(spec: _Spec, image: str) -> tuple[str, str]:
    """The prediction columns and their outer join (none without a version)."""
    if not spec.version:
        return "NULL AS predicted, NULL AS predicted_by", ""
    join = f" LEFT JOIN predictions p ON p.user_id = :u AND p.image_id = {image} AND p.model_version = :v"
    return "p.score AS predicted, p.predicted_by AS predicted_by", join


def _order_sql(keys: Sequence[tuple[str, bool, bool]], reverse: bool) -> str:
    """ORDER BY terms of (expression, descending, nullable) keys; NULLs sort
    last in the listing's order (first when it is reversed)."""
    terms = []
    for expr, descending, nullable in keys:
        term = f"{expr} {'DESC' if descending != reverse else 'ASC'}"
        if nullable:
            term += " NULLS FIRST" if reverse else " NULLS LAST"
        terms.append(term)
    return ", ".join(terms)


# Typed NULLs: PostgreSQL must know a column's type across a UNION.
_NO_RATING = "CAST(NULL AS FLOAT) AS rating, CAST(NULL AS TIMESTAMP WITH TIME ZONE) AS rated_at"


def _source_sql(rated: RatedFilter) -> tuple[str, str, str, str]:
    """The image id, the FROM and WHERE clauses and the rating columns of a
    listing's rows."""
    if rated is RatedFilter.YES:
        return "r.image_id", "ratings r JOIN images i ON i.id = r.image_id", "r.user_id = :u", "r.rating, r.rated_at"
    if rated is RatedFilter.NO:
        return "i.id", "images i", _UNRATED.format(image="i.id"), _NO_RATING
    joined = "images i LEFT JOIN ratings r ON r.user_id = :u AND r.image_id = i.id"
    return "i.id", joined, "1 = 1", "r.rating, r.rated_at"


def _page_sql(
    spec: _Spec,
    style: str,
    paged: bool = True,
    reverse: bool = False,
    counted: str = "",
    unscored: bool = False,
    guard: str = "",
) -> str:
    """The listing's statement, with LIMIT :lim OFFSET :off when ``paged``.
    ``reverse``: in the opposite order, for a page read from the end.
    ``counted``: a count statement whose value every row carries as
    ``total``. ``unscored``: only the rows without a current prediction,
    by name (the tail of a ``predicted-*`` listing). ``guard``: one more
    condition on every row."""
    rated, sort = spec.rated, spec.sort
    if rated is RatedFilter.ALL and sort in (SortOrder.DATE_DESC, SortOrder.DATE_ASC):
        return _merged_sql(spec, style, paged, reverse, counted, guard)
    image, source, where, rating = _source_sql(rated)
    if guard:
        where += f" AND {guard}"
    predicted, join = _predicted_sql(spec, image) if not unscored else ("NULL AS predicted, NULL AS predicted_by", "")
    if unscored:
        where += (
            f" AND NOT EXISTS (SELECT 1 FROM predictions n WHERE n.user_id = :u AND n.image_id = {image} "
            f"AND n.model_version = :v)"
        )
    descending = sort in (SortOrder.NAME_DESC, SortOrder.DATE_DESC, SortOrder.RATING_DESC, SortOrder.PREDICTED_DESC)
    keys: list[tuple[str, bool, bool]] = []
    if unscored:
        pass
    elif sort in _PREDICTED and spec.version:
        keys.append(("p.score", descending, True))
    elif sort in (SortOrder.DATE_DESC, SortOrder.DATE_ASC):
        keys.append(("r.rated_at" if rated is RatedFilter.YES else "i.created_at", descending, False))
    elif sort in (SortOrder.RATING_DESC, SortOrder.RATING_ASC) and rated is not RatedFilter.NO:
        keys.append(("r.rating", descending, rated is RatedFilter.ALL))
    keys.append(("i.name", sort is SortOrder.NAME_DESC, False))
    total = f", ({counted}) AS total" if counted else ""
    sql = (
        f"SELECT i.name, {rating}, {predicted}{total} FROM {source}{join} "
        f"WHERE {where}{_tags_sql(spec, image, style)} ORDER BY {_order_sql(keys, reverse)}"
    )
    return f"{sql} LIMIT :lim OFFSET :off" if paged else sql


def _merged_sql(spec: _Spec, style: str, paged: bool, reverse: bool, counted: str, guard: str = "") -> str:
    """rated=all by date: the user's ratings in their date index's order
    and the unrated images in theirs (an anti-probe each), each cut at
    offset+limit rows (``:n``), merged: what is sorted is at most twice the
    page's depth, not every image."""
    direction = "DESC" if (spec.sort is SortOrder.DATE_DESC) != reverse else "ASC"
    name = "DESC" if reverse else "ASC"
    cut = " LIMIT :n" if paged else ""
    # The guard goes into each stream too: a stream is read whether or not
    # the outer condition holds (SQLite), unless its own WHERE fails first.
    within = f" AND {guard}" if guard else ""
    rated = (
        f"SELECT * FROM (SELECT i.id, i.name, r.rating, r.rated_at, r.rated_at AS d FROM ratings r "
        f"JOIN images i ON i.id = r.image_id WHERE r.user_id = :u{within}{_tags_sql(spec, 'r.image_id', style)} "
        f"ORDER BY r.rated_at {direction}, i.name {name}{cut}) a"
    )
    unrated = (
        f"SELECT * FROM (SELECT i.id, i.name, {_NO_RATING}, i.created_at AS d FROM images i "
        f"WHERE {_UNRATED.format(image='i.id')}{within}{_tags_sql(spec, 'i.id', style)} "
        f"ORDER BY i.created_at {direction}, i.name {name}{cut}) b"
    )
    predicted, join = _predicted_sql(spec, "s.id")
    total = f", ({counted}) AS total" if counted else ""
    sql = (
        f"SELECT s.name, s.rating, s.rated_at, {predicted}{total} FROM ({rated} UNION ALL {unrated}) s{join} "
        f"{f'WHERE {guard} ' if guard else ''}ORDER BY s.d {direction}, s.name {name}"
    )
    return f"{sql} LIMIT :lim OFFSET :off" if paged else sql


def _scored_sql(spec: _Spec, style: str, count: bool = False, counted: str = "") -> str:
    """The rows of a ``predicted-*`` listing that carry a current score,
    driven from the user's range of ``ix_predictions_user_score`` (rows of
    another version are skipped on the way); ``count``: how many.
    ``counted``: a count statement whose value every row carries as ``total``."""
    joins = {
        RatedFilter.YES: " JOIN ratings r ON r.user_id = :u AND r.image_id = p.image_id",
        RatedFilter.NO: "",
        RatedFilter.ALL: " LEFT JOIN ratings r ON r.user_id = :u AND r.image_id = p.image_id",
    }
    where = "p.user_id = :u AND p.model_version = :v"
    if spec.rated is RatedFilter.NO:
        where += f" AND {_UNRATED.format(image='p.image_id')}"
    where += _tags_sql(spec, "p.image_id", style)
    if count:
        join = joins[RatedFilter.YES] if spec.rated is RatedFilter.YES else ""
        return f"SELECT count(*) FROM predictions p{join} WHERE {where}"
    rating = _NO_RATING if spec.rated is RatedFilter.NO else "r.rating, r.rated_at"
    # The rating is probed before the image is read (SQLite joins in the
    # order written): only rows that stay in the listing read their image.
    # Collecting a rare tag's images first (SQLite only) must not walk the
    # score index: ``score + 0`` is not indexed, so SQLite probes each
    # collected image's prediction by primary key and sorts the few found.
    score = "p.score + 0" if style == _FILTER_FIRST else "p.score"
    direction = "DESC" if spec.sort is SortOrder.PREDICTED_DESC else "ASC"
    total = f", ({counted}) AS total" if counted else ""
    return (
        f"SELECT i.name, {rating}, p.score AS predicted, p.predicted_by AS predicted_by{total} FROM predictions p"
        f"{joins[spec.rated]} JOIN images i ON i.id = p.image_id WHERE {where} "
        f"ORDER BY {score} {direction}, i.name ASC LIMIT :lim OFFSET :off"
    )


def _predicted_page(
    conn: Connection,
    spec: _Spec,
    params: dict[str, object],
    scored_style: str,
    unscored_style: str,
    limit: int,
    offset: int,
) -> list[UserImage]:
    """One page of a ``predicted-*`` listing (score in the sort's direction,
    ties by name, images without a current score last by name) without
    sorting every candidate: the user's current scores are walked in
    ``ix_predictions_user_score`` order, each row probing its rating and
    tags, until the page is full; only a page that reaches past the scored
    rows reads the unscored ones (by name, which the images' name index
    gives in order) and counts the scored ones to know where they start."""
    rows = _fetch(conn, _scored_sql(spec, scored_style), params)
    if len(rows) == limit:
        return rows
    if rows:  # the page began among the scored rows and ran past them
        scored_count = offset + len(rows)
    else:
        scored_count = conn.execute(text(_scored_sql(spec, scored_style, count=True)), params).scalar_one()
    tail = {**params, "lim": limit - len(rows), "off": max(0, offset - scored_count)}
    return rows + _fetch(conn, _page_sql(spec, unscored_style, unscored=True), tail)


def _utc(value: object) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite hands back the
    naive UTC text it stores; PostgreSQL a timestamptz)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _fetch(conn: Connection, sql: str, params: dict[str, object]) -> list[UserImage]:
    return [
        UserImage(name, rating, _utc(rated_at), predicted, predicted_by)
        for name, rating, rated_at, predicted, predicted_by, *_ in conn.execute(text(sql), params)
    ]


def _fetch_counted(conn: Connection, sql: str, params: dict[str, object]) -> tuple[list[UserImage], int]:
    """Rows of a statement whose last column is the total; (rows, 0) when empty."""
    result = conn.execute(text(sql), params).all()
    rows = [UserImage(r[0], r[1], _utc(r[2]), r[3], r[4]) for r in result]
    return rows, (result[0][5] if result else 0)


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
