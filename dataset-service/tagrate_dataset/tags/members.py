"""``tag_members``: the tags each image has from any source, one index
range per tag, so that a filter on several common tags is an intersection
of sorted id ranges (a merge of two index ranges) rather than per-row
probes of four tables (``image_tags`` with its threshold, ``hidden_tags``,
``manual_tags``, ``taught_image_tags``, each through ``tag_implied``).

A row (tag, image) says what an any-source filter term on the tag matches
(``tags/filtersql.py``): the current tagger model scored the tag (or a tag
implying it) at or above its threshold and nobody removed it, or a person
added it, or a taught classifier put it there. Source-specific terms
(``manual:``, ``taught:``, ``model:``) still read the source tables.

Kept in step in the database itself, so no writer can miss it:
- triggers on the four source tables (every insert, update and delete,
  cascades included) recompute, for the changed (image, tag), that tag and
  every tag it implies on that image;
- a change of the implication closure (``owned._rebuild_closure``)
  recomputes the tags whose closure changed, over every image
  (:func:`refresh_tags`);
- a change of the current tagger model or its threshold rebuilds the whole
  table (:func:`sync`, called where models are registered);
- a bulk load marks it not ready first and rebuilds it last.

``tag_members_state`` (one row) records the model and threshold it was
built for and whether it is ready; the listing reads ``tag_members`` only
when they are the current ones (:func:`usable`), and otherwise the source
tables as before: a path that changed the model without :func:`sync` is
slower, never wrong.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from sqlalchemy import Connection, text

STATE = "tag_members_state"
_READY = f"(SELECT s.ready FROM {STATE} s WHERE s.id = 1)"
_MODEL = f"(SELECT s.model_id FROM {STATE} s WHERE s.id = 1)"
_THRESHOLD = f"(SELECT s.threshold FROM {STATE} s WHERE s.id = 1)"
_SOURCES = ("image_tags", "manual_tags", "hidden_tags", "taught_image_tags")


def _ids(tag: str) -> str:
    """The tag and every tag that implies it."""
    return f"(SELECT {tag} UNION ALL SELECT d.tag_id FROM tag_implied d WHERE d.implied_id = {tag})"


def _has(image: str, tag: str) -> str:
    """Whether the image has the tag from any source (tags implying it count)."""
    return (
        f"(EXISTS (SELECT 1 FROM image_tags x WHERE x.image_id = {image} AND x.tagger_model_id = {_MODEL} "
        f"AND x.score >= {_THRESHOLD} AND x.tag_id IN {_ids(tag)} "
        f"AND NOT EXISTS (SELECT 1 FROM hidden_tags h WHERE h.image_id = x.image_id AND h.tag_id = x.tag_id)) "
        f"OR EXISTS (SELECT 1 FROM manual_tags y WHERE y.image_id = {image} AND y.tag_id IN {_ids(tag)}) "
        f"OR EXISTS (SELECT 1 FROM taught_image_tags z WHERE z.image_id = {image} AND z.tag_id IN {_ids(tag)}))"
    )


def _insert(sqlite: bool, select: str) -> str:
    if sqlite:
        return f"INSERT OR IGNORE INTO tag_members (tag_id, image_id) {select}"
    return f"INSERT INTO tag_members (tag_id, image_id) {select} ON CONFLICT DO NOTHING"


def refresh_one_sql(sqlite: bool, image: str, tag: str) -> list[str]:
    """Statements that recompute, on image ``image``, tag ``tag`` and every
    tag it implies (both SQL expressions, e.g. ``NEW.image_id``)."""
    affected = f"(SELECT {tag} AS tag_id UNION SELECT c.implied_id FROM tag_implied c WHERE c.tag_id = {tag})"
    return [
        f"DELETE FROM tag_members WHERE image_id = {image} AND tag_id IN (SELECT a.tag_id FROM {affected} a)",
        _insert(sqlite, f"SELECT a.tag_id, {image} FROM {affected} a WHERE {_has(image, 'a.tag_id')}"),
    ]


# Every (tag, image) from the sources, before the implications.
_SOURCE_ROWS = (
    f"SELECT x.tag_id, x.image_id FROM image_tags x WHERE x.tagger_model_id = {_MODEL} "
    f"AND x.score >= {_THRESHOLD} "
    "AND NOT EXISTS (SELECT 1 FROM hidden_tags h WHERE h.image_id = x.image_id AND h.tag_id = x.tag_id) "
    "UNION ALL SELECT y.tag_id, y.image_id FROM manual_tags y "
    "UNION ALL SELECT z.tag_id, z.image_id FROM taught_image_tags z"
)


def _recompute(conn: Connection, wanted: list[int] | None) -> None:
    """Recomputes these tags (every tag when None) over every image."""
    sqlite = conn.dialect.name == "sqlite"
    only = "" if wanted is None else f"tag_id IN ({', '.join(str(int(t)) for t in wanted)})"
    conn.execute(text("DELETE FROM tag_members" + (f" WHERE {only}" if only else "")))
    select = (
        f"SELECT DISTINCT e.tag_id, e.image_id FROM (SELECT s.tag_id, s.image_id FROM ({_SOURCE_ROWS}) s "
        f"UNION ALL SELECT c.implied_id, s.image_id FROM ({_SOURCE_ROWS}) s "
        f"JOIN tag_implied c ON c.tag_id = s.tag_id) e WHERE {('e.' + only) if only else '1 = 1'}"
    )
    conn.execute(text(_insert(sqlite, select)))


def _new_epoch(conn: Connection, ready: bool) -> None:
    """Marks the table ``ready`` (or not) under a new epoch: every cached
    copy of its rows (``library/bitsets.py``) is stale from now on."""
    conn.execute(
        text(f"UPDATE {STATE} SET ready = :ready, epoch = :epoch WHERE id = 1"),
        {"ready": ready, "epoch": secrets.randbits(62)},
    )


def refresh_tags(conn: Connection, tag_ids: Iterable[int]) -> None:
    """Recomputes these tags over every image (an implication changed),
    the row triggers idle meanwhile."""
    wanted = sorted(set(tag_ids))
    if not wanted:
        return
    ready = bool(conn.execute(text(f"SELECT ready FROM {STATE} WHERE id = 1")).scalar_one())
    _new_epoch(conn, False)
    _recompute(conn, wanted)
    _new_epoch(conn, ready)


_CURRENT = "SELECT id, threshold FROM tagger_models ORDER BY registered_at DESC, id DESC LIMIT 1"


def rebuild(conn: Connection) -> None:
    """Rebuilds the whole table for the current tagger model and marks it ready."""
    current = conn.execute(text(_CURRENT)).one_or_none()
    model_id, threshold = (current[0], current[1]) if current is not None else (None, None)
    conn.execute(
        text(f"UPDATE {STATE} SET ready = false, model_id = :m, threshold = :th WHERE id = 1"),
        {"m": model_id, "th": threshold},
    )
    _recompute(conn, None)
    _new_epoch(conn, True)


def suspend(conn: Connection) -> None:
    """Marks the table not ready (its triggers do nothing until :func:`rebuild`)."""
    conn.execute(text(f"UPDATE {STATE} SET ready = false WHERE id = 1"))


def sync(conn: Connection) -> None:
    """Rebuilds the table when the current tagger model or its threshold is
    not the one it was built for (or it is not ready)."""
    state = conn.execute(text(f"SELECT ready, model_id, threshold FROM {STATE} WHERE id = 1")).one_or_none()
    current = conn.execute(text(_CURRENT)).one_or_none()
    wanted = (current[0], current[1]) if current is not None else (None, None)
    if state is None or not state[0] or (state[1], state[2]) != wanted:
        rebuild(conn)


# The preamble's columns: the model id (-1 for none) and threshold the table
# serves, or NULLs when it is not ready (see :func:`usable`), and its epoch.
STATE_COLUMNS = [
    f"(SELECT CASE WHEN s.ready THEN coalesce(s.model_id, -1) END FROM {STATE} s WHERE s.id = 1) AS members_model",
    f"(SELECT s.threshold FROM {STATE} s WHERE s.id = 1) AS members_threshold",
    f"(SELECT s.epoch FROM {STATE} s WHERE s.id = 1) AS epoch",
]


def version_sql(tag_id: str) -> str:
    """How many times the tag's rows changed since the last rebuild (0: never)."""
    return f"coalesce((SELECT v.version FROM tag_member_versions v WHERE v.tag_id = {tag_id}), 0)"


def usable(members_model: int | None, members_threshold: float | None, model: tuple[int, float] | None) -> bool:
    """Whether the table (its state as :data:`STATE_COLUMNS` read it) serves
    the current tagger model ``model`` (None: there is none)."""
    if members_model is None:
        return False
    if model is None:
        return members_model == -1
    return (members_model, members_threshold) == model


# ---- the triggers ----


def _condition(table: str, row: str) -> str:
    """When a change of ``row`` (NEW or OLD) can change the table."""
    if table == "image_tags":
        return f"{row}.tagger_model_id = {_MODEL}"
    return "1 = 1"


def trigger_sql(sqlite: bool) -> list[str]:
    """The DDL of the triggers that keep ``tag_members`` in step with the
    source tables (idempotent: dropped first)."""
    ddl: list[str] = []
    for table in _SOURCES:
        name = f"tag_members_{table}"
        if sqlite:
            for event, rows in (("INSERT", ("NEW",)), ("DELETE", ("OLD",)), ("UPDATE", ("OLD", "NEW"))):
                trigger = f"{name}_{event.lower()}"
                body = "".join(
                    f"{statement}; "
                    for row in rows
                    for statement in refresh_one_sql(True, f"{row}.image_id", f"{row}.tag_id")
                )
                when = " OR ".join(f"{_condition(table, row)}" for row in rows)
                ddl.append(f"DROP TRIGGER IF EXISTS {trigger}")
                ddl.append(
                    f"CREATE TRIGGER {trigger} AFTER {event} ON {table} WHEN {_READY} AND ({when}) BEGIN {body}END"
                )
            continue
        steps = []
        for row, ops in (("OLD", "('DELETE', 'UPDATE')"), ("NEW", "('INSERT', 'UPDATE')")):
            statements = "".join(f"{s}; " for s in refresh_one_sql(False, f"{row}.image_id", f"{row}.tag_id"))
            steps.append(f"IF TG_OP IN {ops} AND {_condition(table, row)} THEN {statements}END IF; ")
        ddl.append(
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NOT coalesce({_READY}, false) THEN RETURN NULL; END IF; {''.join(steps)}RETURN NULL; END $$"
        )
        ddl.append(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        ddl.append(
            f"CREATE TRIGGER {name} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()"
        )
    return ddl


def _version_sql(row: str) -> str:
    """Counts a change of the tag's rows."""
    return (
        f"INSERT INTO tag_member_versions (tag_id, version) VALUES ({row}.tag_id, 1) "
        "ON CONFLICT (tag_id) DO UPDATE SET version = tag_member_versions.version + 1"
    )


def version_trigger_sql(sqlite: bool) -> list[str]:
    """The DDL of the triggers that count each tag's changes (``tag_member_versions``)."""
    if sqlite:
        ddl = []
        for event, row in (("INSERT", "NEW"), ("DELETE", "OLD")):
            trigger = f"tag_members_tag_members_{event.lower()}"
            ddl.append(f"DROP TRIGGER IF EXISTS {trigger}")
            ddl.append(
                f"CREATE TRIGGER {trigger} AFTER {event} ON tag_members WHEN {_READY} BEGIN {_version_sql(row)}; END"
            )
        return ddl
    name = "tag_members_tag_members"
    return [
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NOT coalesce({_READY}, false) THEN RETURN NULL; END IF; "
        f"IF TG_OP = 'DELETE' THEN {_version_sql('OLD')}; ELSE {_version_sql('NEW')}; END IF; "
        "RETURN NULL; END $$",
        f"DROP TRIGGER IF EXISTS {name} ON tag_members",
        f"CREATE TRIGGER {name} AFTER INSERT OR DELETE ON tag_members FOR EACH ROW EXECUTE FUNCTION {name}()",
    ]


def install(conn: Connection) -> None:
    """Creates the state row and the triggers, then builds the table."""
    sqlite = conn.dialect.name == "sqlite"
    exists = conn.execute(text(f"SELECT count(*) FROM {STATE}")).scalar_one()
    if not exists:
        conn.execute(text(f"INSERT INTO {STATE} (id, ready, epoch) VALUES (1, false, 0)"))
    for statement in [*trigger_sql(sqlite), *version_trigger_sql(sqlite)]:
        conn.exec_driver_sql(statement)
    rebuild(conn)
