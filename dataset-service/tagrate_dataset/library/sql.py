"""The SQL text of a listing page (GetUserData): the rows of rated=yes (the
user's ratings), rated=no (the images without one, each an anti-probe of
the user's ratings) and rated=all (both; by date, two index-ordered streams
merged), the tag conditions, the sort keys and the prediction join, the
``predicted-*`` pages driven from the score index, the counts, the lookups
of the preamble, and the one-statement unfiltered and deep pages.
``listing.py`` chooses among them and binds the parameters."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tagrate_common.userdata import RatedFilter, SortOrder

from ..tags.filtersql import FILTER_FIRST, SCAN, FilterSQL, resolve_sql, tag_id_sql
from ..tags.members import STATE_COLUMNS, version_sql

UNFILTERED_COUNT = {
    RatedFilter.YES: "SELECT count(*) FROM ratings c WHERE c.user_id = :u",
    # Exact: every rating's image is a stored image (foreign key).
    RatedFilter.NO: "SELECT (SELECT count(*) FROM images) - (SELECT count(*) FROM ratings c WHERE c.user_id = :u)",
    RatedFilter.ALL: "SELECT count(*) FROM images",
}


def deep_sql(spec: Spec) -> str:
    """An unfiltered page counted and read in one statement: the count
    (once, in a CTE) decides which of two branches runs, the page read
    forwards or, past the middle, in the reversed order (the caller turns
    those rows round); only the chosen branch's one-time condition holds.
    Every row carries the count; a page past the end has no row."""
    count = UNFILTERED_COUNT[spec.rated]
    forward = page_sql(
        spec,
        FILTER_FIRST,
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
    backward = page_sql(
        spec,
        FILTER_FIRST,
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


def by_name(sql: str) -> str:
    """``sql`` with the user id and the serving version looked up inside it
    (each lookup runs once per statement on both databases)."""
    return re.sub(r":v\b", _VERSION_BY_NAME, re.sub(r":u\b", _USER_BY_NAME, sql))


# The preamble's columns before the tag ids.
FIXED_COLUMNS = 11


SUBJECT_BY_NAME = "u.name = :subject"


SUBJECT_BY_ID = "u.id = :user_id"


def preamble_sql(where: str, tag_count: int, rated: RatedFilter, counts: bool, newcomer: bool = False) -> str:
    """One row: the user's id, the versions serving the user and everyone,
    the current tagger model, the counts the listing needs (NULL when not
    asked for), the state of ``tag_members`` (``tags/members.py``), the
    user's ratings version and,
    for each named tag, its id (an alias resolved; NULL: no such tag), whether tags imply it and which sources have it
    (``tags/filtersql.resolve_sql``), then each tag's change count
    (``library/bitsets.py``). ``newcomer``: one row also when there
    is no such user (its id NULL, no ratings), for the listings that show a
    user who has not rated yet every stored image (``rated`` no or all)."""
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
        *(STATE_COLUMNS if tag_count else ["NULL AS members_model", "NULL AS members_threshold", "NULL AS epoch"]),
        "u.ratings_version AS ratings_version",
    ]
    columns += resolve_sql(tag_count)
    # After the tags' columns: each tag's change count (``library/bitsets.py``).
    columns += [version_sql(tag_id_sql(n)) for n in range(tag_count)]
    if newcomer:
        return f"SELECT {', '.join(columns)} FROM (SELECT 1 AS one) one LEFT JOIN users u ON {where}"
    return f"SELECT {', '.join(columns)} FROM users u WHERE {where}"


@dataclass(frozen=True)
class Spec:
    """Everything a listing statement is written from."""

    sqlite: bool
    version: str
    filter: FilterSQL  # the conditions, a driving one (the rarest tag) first
    sort: SortOrder
    rated: RatedFilter
    # PostgreSQL, a rare driving tag: its images are collected and sorted,
    # never the sort order's index walked (see ``page_sql``).
    collect: bool = False

    @property
    def filtered(self) -> bool:
        return bool(self.filter)


def _tags_sql(spec: Spec, image: str, style: str) -> str:
    """`` AND ...`` for each filter condition on the image id ``image``: the
    first (driving) tag as ``IN`` its images when filtering first, the
    others as probes (see ``tags/filtersql.py``)."""
    return spec.filter.where(image, style)


def _model_tags_sql(include: int, exclude: int, image: str) -> str:
    parts = []
    for n in range(include + exclude):
        probe = (
            f"EXISTS (SELECT 1 FROM image_tags x{n} WHERE x{n}.image_id = {image} AND x{n}.tagger_model_id = :m "
            f"AND x{n}.tag_id = :t{n} AND x{n}.score >= :th)"
        )
        parts.append(f"NOT {probe}" if n >= include else probe)
    return "".join(f" AND {part}" for part in parts)


def tag_conditions(include: int, exclude: int, image: str) -> str:
    """`` AND ...`` for ``include`` included then ``exclude`` excluded tags
    (their ids bound as ``:t0``, ``:t1``... in that order, with the tagger
    model ``:m`` and its threshold ``:th``) on the image id expression
    ``image``, each a probe of the ``image_tags`` primary key: the tagger
    model's tags only, for a caller that filters a small set of images (an
    album's) rather than walking the library."""
    return _model_tags_sql(include, exclude, image)


_UNRATED = "NOT EXISTS (SELECT 1 FROM ratings q WHERE q.user_id = :u AND q.image_id = {image})"


def count_sql(spec: Spec, style: str) -> str:
    """The matches of a (tag-filtered) listing: a user's ratings are
    counted without the images table, unrated ones by an anti-probe."""
    if spec.rated is RatedFilter.YES:
        return f"SELECT count(*) FROM ratings c WHERE c.user_id = :u{_tags_sql(spec, 'c.image_id', style)}"
    where = _UNRATED.format(image="c.id") if spec.rated is RatedFilter.NO else "1 = 1"
    return f"SELECT count(*) FROM images c WHERE {where}{_tags_sql(spec, 'c.id', style)}"


def _predicted_sql(spec: Spec, image: str) -> tuple[str, str]:
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


def page_sql(
    spec: Spec,
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
    elif sort in PREDICTED and spec.version:
        keys.append(("p.score", descending, True))
    elif sort in (SortOrder.DATE_DESC, SortOrder.DATE_ASC):
        keys.append(("r.rated_at" if rated is RatedFilter.YES else "i.created_at", descending, False))
    elif sort in (SortOrder.RATING_DESC, SortOrder.RATING_ASC) and rated is not RatedFilter.NO:
        keys.append(("r.rating", descending, rated is RatedFilter.ALL))
    keys.append(("i.name", sort is SortOrder.NAME_DESC, False))
    if spec.collect:
        # No index gives COALESCE(k, k)'s order (the same as k's): PostgreSQL
        # sorts the matches instead of walking the sort order's index until
        # enough match, which its estimate of an implied tag's images (a
        # generic one per implying tag, not the tag's own) makes it pick
        # when few of the walked rows match.
        expr, descending, nullable = keys[0]
        keys[0] = (f"COALESCE({expr}, {expr})", descending, nullable)
    total = f", ({counted}) AS total" if counted else ""
    sql = (
        f"SELECT i.name, {rating}, {predicted}{total} FROM {source}{join} "
        f"WHERE {where}{_tags_sql(spec, image, style)} ORDER BY {_order_sql(keys, reverse)}"
    )
    return f"{sql} LIMIT :lim OFFSET :off" if paged else sql


def _merged_sql(spec: Spec, style: str, paged: bool, reverse: bool, counted: str, guard: str = "") -> str:
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


def scored_sql(spec: Spec, style: str, count: bool = False, counted: str = "") -> str:
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
    score = "p.score + 0" if style == FILTER_FIRST else "p.score"
    direction = "DESC" if spec.sort is SortOrder.PREDICTED_DESC else "ASC"
    total = f", ({counted}) AS total" if counted else ""
    return (
        f"SELECT i.name, {rating}, p.score AS predicted, p.predicted_by AS predicted_by{total} FROM predictions p"
        f"{joins[spec.rated]} JOIN images i ON i.id = p.image_id WHERE {where} "
        f"ORDER BY {score} {direction}, i.name ASC LIMIT :lim OFFSET :off"
    )


# How tag conditions are written (``FILTER_FIRST``, ``SCAN``; defined in
# ``tags/filtersql.py``). Both mean the same; they differ in the plan SQLite
# picks (it has no per-tag statistics and follows the query's shape;
# PostgreSQL turns both into semi-joins and plans by its statistics).
# Filter first: the first (rarest) included tag is ``image_id IN (its
# images)``, so matches are collected from the tag indexes and then sorted;
# the other tags are probed per candidate. Scan: every tag is a correlated
# EXISTS, so rows are walked in the sort order's index and each probes its
# tags, stopping after offset+limit matches.
__all__ = ["FILTER_FIRST", "SCAN"]


PREDICTED = (SortOrder.PREDICTED_DESC, SortOrder.PREDICTED_ASC)
