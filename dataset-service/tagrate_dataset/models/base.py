"""The base of every table, the UTC timestamp type, and the global
dataset's name (``ALL_SUBJECT``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from tagrate_common.database import model_registry


class DatasetModel(SQLModel, registry=model_registry()):
    """The base of the dataset service's tables: their own metadata (with
    the shared constraint naming convention), which the migrations compare
    against, apart from any other service's tables in the same process."""


# Snapshot subject and GetUser name for the global (every user) dataset.
ALL_SUBJECT = "all"


def utc_now() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are UTC everywhere: stored as ``timestamptz`` on PostgreSQL
    and as naive UTC text on SQLite (which has no time zones, and whose text
    form sorts chronologically), always read back as aware UTC datetimes."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp(**kw: Any) -> Any:
    return Field(default_factory=utc_now, sa_type=UTCDateTime, nullable=False, **kw)
