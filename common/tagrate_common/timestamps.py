"""Times, in the three forms they take: a protobuf ``Timestamp`` (on the
wire between services), an aware UTC ``datetime`` (in code and databases)
and the REST API's text, ``2026-11-26T22:47:41Z`` (UTC, whole seconds).

A naive ``datetime`` is taken to be UTC, as SQLite hands them back."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

API_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_DAY_SECONDS = 86_400
# The Timestamps ``datetime`` can hold (0001-01-01 to 9999-12-31, whole days):
# outside them the text is left to ``datetime``, errors included.
_FIRST_SECOND = -62_135_596_800
_LAST_SECOND = 253_402_300_799
# The time of day's text as its minute's "HH:MM:" and its second's "SSZ".
_MINUTE_TEXT = tuple(f"{minute // 60:02d}:{minute % 60:02d}:" for minute in range(24 * 60))
_SECOND_TEXT = tuple(f"{second:02d}Z" for second in range(60))


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
        return _seconds_text(value.seconds)
    return _utc(value).strftime(API_FORMAT)


@lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    """``2026-11-26T`` for the day ``day`` days after 1970-01-01 (UTC)."""
    return datetime.fromtimestamp(day * _DAY_SECONDS, UTC).strftime("%Y-%m-%dT")


def _seconds_text(seconds: int) -> str:
    """The API text of ``seconds`` since the epoch: the text of its day
    (cached, as a page of rows shares few days) and the time of day from
    tables; the same text as ``strftime(API_FORMAT)`` at a seventh of its cost
    (a page of 60 ``rated_at`` is formatted per /getuserdata)."""
    if not _FIRST_SECOND <= seconds <= _LAST_SECOND:
        return datetime.fromtimestamp(seconds, UTC).strftime(API_FORMAT)
    day, second = divmod(seconds, _DAY_SECONDS)
    minute, second = divmod(second, 60)
    return _day_text(day) + _MINUTE_TEXT[minute] + _SECOND_TEXT[second]


def optional_api_text(message: Message, field: str) -> str | None:
    """The timestamp ``field`` of ``message`` in API form, or None when unset."""
    return api_text(getattr(message, field)) if message.HasField(field) else None
