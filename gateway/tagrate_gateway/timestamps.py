"""How the API writes times: ``2026-11-26T22:47:41Z`` (UTC, whole seconds)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def iso_utc(ts: Timestamp) -> str:
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def optional_iso_utc(message: Message, field: str) -> str | None:
    """The timestamp ``field`` of ``message`` in API form, or None when unset."""
    return iso_utc(getattr(message, field)) if message.HasField(field) else None
