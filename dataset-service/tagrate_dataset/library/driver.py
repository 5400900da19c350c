"""The listing's statements sent as the driver's own SQL.

The listing writes its statements as text with ``:name`` parameters
(``sql.py``). ``conn.execute(text(sql), params)`` parses that text again
on every call (a regular expression over a few kilobytes), looks up the
compiled form and processes each parameter, about 0.1 ms a statement where
the statement itself can take a millisecond: a page's fixed cost. Here each
text is compiled once per dialect (``psycopg``: ``%(name)s``, with ``%``
escaped; SQLite: ``?`` in order) and run with ``exec_driver_sql``, which
keeps SQLAlchemy's error translation and connection invalidation.

The statements' texts are few (the shapes of ``sql.py`` times the tag
counts a filter may have), so the cache is bounded but never churns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, CursorResult, text
from sqlalchemy.engine import Dialect


@lru_cache(maxsize=2048)
def _compiled(dialect: Dialect, sql: str) -> tuple[str, tuple[str, ...], bool]:
    """The driver's text of ``sql``, the parameter names it takes (in
    order, for a positional driver) and whether it takes them by position."""
    compiled = text(sql).compile(dialect=dialect)
    if compiled.positional:
        return compiled.string, tuple(compiled.positiontup or ()), True
    return compiled.string, tuple(compiled.binds), False


def execute(conn: Connection, sql: str, params: Mapping[str, Any]) -> CursorResult[Any]:
    """``conn.execute(text(sql), params)`` without the per-call parsing
    (only the parameters the statement names are sent, as there)."""
    statement, names, positional = _compiled(conn.dialect, sql)
    args: Sequence[Any] | Mapping[str, Any] = (
        tuple(params[name] for name in names) if positional else {name: params[name] for name in names}
    )
    return conn.exec_driver_sql(statement, args)  # type: ignore[arg-type]
