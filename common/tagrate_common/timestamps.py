"""Times, in the three forms they take: a protobuf ``Timestamp`` (on the
wire between services), an aware UTC ``datetime`` (in code and databases)
and the REST API's text, ``2026-11-26T22:47:41Z`` (UTC, whole seconds).

A naive ``datetime`` is taken to be UTC, as SQLite hands them back."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

API_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    """A protobuf Timestamp of ``value``, or None for None (so a message
    field given it stays unset)."""
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(_utc(value))
    return stamp


def to_datetime(stamp: Timestamp) -> datetime:
    """The aware UTC datetime of a protobuf Timestamp (to the microsecond)."""
    return stamp.ToDatetime(UTC)


def optional_datetime(message: Message, field: str) -> datetime | None:
    """The timestamp ``field`` of ``message`` as a UTC datetime, or None when unset."""
    return to_datetime(getattr(message, field)) if message.HasField(field) else None


def api_text(value: Timestamp | datetime) -> str:
    """``value`` as the API writes times: ``2026-11-26T22:47:41Z`` (fractions
    of a second are dropped, not rounded)."""
    if isinstance(value, Timestamp):
        return datetime.fromtimestamp(value.seconds, UTC).strftime(API_FORMAT)
    return _utc(value).strftime(API_FORMAT)


def optional_api_text(message: Message, field: str) -> str | None:
    """The timestamp ``field`` of ``message`` in API form, or None when unset."""
    return api_text(getattr(message, field)) if message.HasField(field) else None
