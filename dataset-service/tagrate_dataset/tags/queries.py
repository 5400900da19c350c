"""The tag list with how many images carry each tag (ListTags)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlmodel import Session

from ..records import current_tagger_model
from .filtersql import model_params


@dataclass(frozen=True)
class TagCounts:
    model: str  # "" before any tagger model
    tags: list[tuple[str, int]]  # by name, code-point order


def tag_counts(
    session: Session, prefix: str = "", user_id: int | None = None, limit: int = 0, contains: str = ""
) -> TagCounts:
    """Every tag on stored images with how many images carry it (with
    ``user_id``: of the user's rated images), from any source as filters
    see them: the current tagger model's at or above its threshold and not
    removed from the image (``hidden_tags``), manual tags, taught tags; an
    image with a tag from two sources counts once (a manual or taught pair
    the model shows too is counted with the model's). Sorted by name in code-point order; names start
    with ``prefix`` (lowercase: tag names are stored lowercase).
    ``limit`` 0: every tag. ``contains`` (lowercase): names holding it
    anywhere (the tag box's substring suggestions; a scan of the tag names,
    a few thousand rows)."""
    model = current_tagger_model(session)
    params: dict[str, object] = {"u": user_id, **model_params((model.id, model.threshold) if model else None)}
    wanted = ""
    if prefix:
        # substr equality, not LIKE: no wildcard to escape, and the same
        # case rules on both databases.
        wanted += " AND substr(w.name, 1, :plen) = :prefix"
        params.update(plen=len(prefix), prefix=prefix)
    if contains:
        # LIKE with its wildcards escaped: "_" in a tag name is a literal
        # underscore. Names are stored lowercase, so LIKE's case rules
        # (insensitive on SQLite, sensitive on PostgreSQL) agree.
        escaped = contains.replace("/", "//").replace("%", "/%").replace("_", "/_")
        wanted += " AND w.name LIKE :contains ESCAPE '/'"
        params["contains"] = f"%{escaped}%"

    def narrowed(alias: str, probe: bool) -> str:
        sql = f" AND {alias}.tag_id IN (SELECT w.id FROM tags w WHERE 1 = 1{wanted})" if wanted else ""
        if user_id is not None and probe:
            # A probe of the ratings primary key per row: these tables are
            # small next to the user's ratings.
            sql += f" AND EXISTS (SELECT 1 FROM ratings r WHERE r.user_id = :u AND r.image_id = {alias}.image_id)"
        elif user_id is not None:
            sql += f" AND {alias}.image_id IN (SELECT r.image_id FROM ratings r WHERE r.user_id = :u)"
        return sql

    def shown(alias: str) -> str:
        """Whether the model shows the pair (scored, not removed)."""
        return (
            f"EXISTS (SELECT 1 FROM image_tags v WHERE v.image_id = {alias}.image_id AND v.tag_id = {alias}.tag_id "
            "AND v.tagger_model_id = :m AND v.score >= :th AND NOT EXISTS (SELECT 1 FROM hidden_tags vh "
            "WHERE vh.image_id = v.image_id AND vh.tag_id = v.tag_id))"
        )

    # Per source a GROUP BY over its (tag, image) index, summed: the model's
    # count is the index-only GROUP BY it always was, less the removed pairs
    # it counted (``hidden_tags`` is small); a manual or taught pair the
    # model shows too is left to the model's count (manual and taught never
    # share a pair), so each image counts once. Plain SQL: the statement is
    # the same every call (building it as expressions cost more than running it).
    branches = {
        "image_tags": "SELECT x.tag_id, count(*) AS n FROM image_tags x WHERE x.tagger_model_id = :m "
        f"AND x.score >= :th{narrowed('x', False)} GROUP BY x.tag_id",
        "hidden_tags": "SELECT h.tag_id, -count(*) AS n FROM hidden_tags h WHERE EXISTS (SELECT 1 FROM image_tags hx "
        "WHERE hx.image_id = h.image_id AND hx.tag_id = h.tag_id AND hx.tagger_model_id = :m AND hx.score >= :th)"
        f"{narrowed('h', True)} GROUP BY h.tag_id",
        "manual_tags": f"SELECT y.tag_id, count(*) AS n FROM manual_tags y WHERE NOT {shown('y')}"
        f"{narrowed('y', True)} GROUP BY y.tag_id",
        "taught_image_tags": f"SELECT z.tag_id, count(*) AS n FROM taught_image_tags z WHERE NOT {shown('z')}"
        f"{narrowed('z', True)} GROUP BY z.tag_id",
    }
    # A branch over an empty table adds nothing but planning (about 0.8 ms
    # of PostgreSQL's for the three, against 0.3 for the rest): one probe
    # per table (an index's first entry) says which have rows.
    used = [table for table, present in _present(session) if present]
    # Code-point order: PostgreSQL's "C" collation; SQLite's BINARY compares
    # UTF-8 bytes, which is code-point order.
    collation = '"C"' if session.get_bind().dialect.name == "postgresql" else "BINARY"
    sql = (
        "SELECT t.name, c.n FROM (SELECT p.tag_id, sum(p.n) AS n FROM ("
        + " UNION ALL ".join(branches[table] for table in used)
        + ") p GROUP BY p.tag_id HAVING sum(p.n) > 0) c JOIN tags t ON t.id = c.tag_id "
        f"ORDER BY t.name COLLATE {collation}"
    )
    if limit:
        sql += " LIMIT :lim"
        params["lim"] = limit
    rows = session.connection().execute(text(sql), params).all()
    return TagCounts(model.model_id if model is not None else "", [(name, int(count)) for name, count in rows])


_SOURCES = ("image_tags", "hidden_tags", "manual_tags", "taught_image_tags")


def _present(session: Session) -> list[tuple[str, bool]]:
    """Which of the tag sources hold any row (``image_tags`` always counts)."""
    probes = ", ".join(f"EXISTS (SELECT 1 FROM {table})" for table in _SOURCES[1:])
    row = session.connection().execute(text(f"SELECT {probes}")).one()
    return [("image_tags", True), *zip(_SOURCES[1:], (bool(value) for value in row), strict=True)]
