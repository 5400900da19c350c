"""Fast bulk loading of whole datasets (benchmarks, imports), on SQLite and
PostgreSQL alike.

Rows are plain dicts keyed by column name (see ``models/``). Give the
``id`` of users, images, tags and tagger models explicitly so the rows of
the other tables can refer to them; PostgreSQL's id sequences are moved past
the loaded ids afterwards, so the service's own inserts keep working.
Timestamps must be timezone-aware; columns left out get these defaults:
timestamps = now, ``ratings_version`` = the user's number of loaded ratings
(0 when none are loaded in the same call; a version given explicitly must
be at least the user's ratings count, as every insert bumps it), ``original_filename`` = "",
``model_version`` = "". Only database rows are written: blobs are not.

PostgreSQL loads through ``COPY`` and SQLite through ``executemany`` in one
transaction per table; both then refresh the planner statistics (ANALYZE),
which the GetUserData plans depend on. Example (the benchmark's shape)::

    bulk_load(engine,
              users=[{"id": 1, "name": "u1"}],
              images=[{"id": 1, "sha256": sha, "name": f"{sha}.jpg", "format": "JPEG",
                       "size_bytes": 1000, "width": 64, "height": 48}],
              tags=[{"id": 1, "name": "cat"}],
              tagger_models=[{"id": 1, "model_id": "m", "threshold": 0.35}],
              ratings=[{"user_id": 1, "image_id": 1, "rating": 0.8}],
              image_taggings=[{"image_id": 1, "tagger_model_id": 1}],
              image_tags=[{"image_id": 1, "tagger_model_id": 1, "tag_id": 1, "score": 0.9}])
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import chain, islice
from typing import Any

from sqlalchemy import Engine, Table, text

from . import models
from .db import is_sqlite
from .models import utc_now
from .tags import members

log = logging.getLogger(__name__)

Row = Mapping[str, Any]

# Load order: every table after the ones it refers to.
TABLES = (
    "users",
    "images",
    "tags",
    "tagger_models",
    "ratings",
    "image_taggings",
    "image_tags",
    "image_features",
    "trained_snapshots",
    "work_items",
    "albums",
    "album_images",
)
_SERIAL_TABLES = ("users", "images", "tags", "tagger_models", "albums")
_TIMESTAMPS = {
    "users": "created_at",
    "images": "created_at",
    "ratings": "rated_at",
    "tagger_models": "registered_at",
    "image_taggings": "tagged_at",
    "image_features": "created_at",
    "trained_snapshots": "trained_at",
    "work_items": "enqueued_at",
    "albums": "created_at",
}
_DEFAULTS: dict[str, dict[str, Any]] = {
    "images": {"original_filename": ""},
    "trained_snapshots": {"model_version": ""},
    "work_items": {"state": "pending", "failed_by": "", "error": ""},
    "albums": {"name": ""},
}


def _table(name: str) -> Table:
    return models.DatasetModel.metadata.tables[name]


def bulk_insert(engine: Engine, table_name: str, rows: Iterable[Row], batch_size: int = 20_000) -> int:
    """Inserts ``rows`` into one table as fast as the database allows, in one
    transaction; returns how many. Every row must have the same keys."""
    table = _table(table_name)
    now = utc_now()
    defaults = dict(_DEFAULTS.get(table_name, {}))
    if table_name in _TIMESTAMPS:
        defaults[_TIMESTAMPS[table_name]] = now
    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0
    columns = list({**defaults, **first})
    unknown = set(columns) - set(table.columns.keys())
    if unknown:
        raise ValueError(f"{table_name} has no column(s) {sorted(unknown)}")

    def complete(row: Row) -> dict[str, Any]:
        return {**defaults, **row}

    all_rows = chain([first], iterator)
    count = 0
    if is_sqlite(engine):
        with engine.begin() as conn:
            while batch := [complete(row) for row in islice(all_rows, batch_size)]:
                conn.execute(table.insert(), batch)
                count += len(batch)
        return count

    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        names = ", ".join(f'"{column}"' for column in columns)
        with cursor.copy(f"COPY {table.name} ({names}) FROM STDIN") as copy:  # type: ignore[attr-defined]
            for row in all_rows:
                full = complete(row)
                copy.write_row(tuple(full[column] for column in columns))
                count += 1
        raw.commit()
    finally:
        raw.close()
    return count


def bulk_load(engine: Engine, analyze: bool = True, **tables: Iterable[Row]) -> dict[str, int]:
    """Loads several tables at once in dependency order (keyword = table
    name, see :data:`TABLES`), then fixes id sequences and refreshes planner
    statistics. Returns the row count per table. The schema must exist
    (``db.migrate``)."""
    unknown = set(tables) - set(TABLES)
    if unknown:
        raise ValueError(f"unknown table(s) {sorted(unknown)}; expected some of {TABLES}")
    ratings = list(tables.get("ratings", ()))
    if "users" in tables:
        # A loaded rating counts as one insert: the snapshot version starts there.
        per_user = Counter(row["user_id"] for row in ratings)
        tables["users"] = (
            {"ratings_version": per_user.get(row["id"], 0), **row} if "id" in row else row for row in tables["users"]
        )
    if "ratings" in tables:
        tables["ratings"] = ratings
    with engine.begin() as conn:
        members.suspend(conn)  # its triggers idle until finish_bulk_load rebuilds it
    counts = {}
    for name in TABLES:
        if name in tables:
            counts[name] = bulk_insert(engine, name, tables[name])
            log.info("bulk-loaded %d rows into %s", counts[name], name)
    finish_bulk_load(engine, analyze)
    return counts


def finish_bulk_load(engine: Engine, analyze: bool = True) -> None:
    """After loading with explicit ids: moves PostgreSQL's id sequences past
    the largest id, rebuilds ``tag_members`` (``tags/members.py``) and
    (``analyze``) refreshes the planner statistics."""
    with engine.begin() as conn:
        members.rebuild(conn)
    if is_sqlite(engine):
        if analyze:
            with engine.begin() as conn:
                conn.exec_driver_sql("ANALYZE")
        return
    with engine.begin() as conn:
        for name in _SERIAL_TABLES:
            sequence = f"pg_get_serial_sequence('{name}', 'id')"
            conn.execute(text(f"SELECT setval({sequence}, COALESCE(MAX(id), 0) + 1, false) FROM {name}"))
    if analyze:
        # VACUUM also fills the visibility map, which index-only scans need.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in (*TABLES, "tag_members"):
                conn.exec_driver_sql(f"VACUUM ANALYZE {name}")
