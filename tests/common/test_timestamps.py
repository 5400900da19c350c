"""The one home of time conversions: protobuf Timestamp, UTC datetime and
the API's ``2026-11-26T22:47:41Z`` text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from tagrate_common.protos import trainer_pb2
from tagrate_common.timestamps import api_text, optional_api_text, optional_datetime, to_datetime, to_timestamp


def test_datetimes_round_trip_through_protobuf_as_utc() -> None:
    aware = datetime(2026, 11, 26, 23, 47, 41, 250_000, tzinfo=timezone(timedelta(hours=1)))
    stamp = to_timestamp(aware)
    assert stamp is not None and stamp.seconds == int(aware.timestamp()) and stamp.nanos == 250_000_000
    assert to_datetime(stamp) == aware and to_datetime(stamp).tzinfo == UTC
    # SQLite hands back naive datetimes, which are UTC
    assert to_datetime(to_timestamp(datetime(2026, 11, 26, 22, 47, 41))) == datetime(
        2026, 11, 26, 22, 47, 41, tzinfo=UTC
    )
    assert to_timestamp(None) is None


def test_the_api_text_is_utc_in_whole_seconds() -> None:
    aware = datetime(2026, 11, 26, 23, 47, 41, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert api_text(aware) == "2026-11-26T22:47:41Z"
    assert api_text(to_timestamp(aware)) == "2026-11-26T22:47:41Z"
    assert api_text(datetime(1969, 12, 31, 23, 59, 59)) == "1969-12-31T23:59:59Z"


def test_unset_fields_are_none() -> None:
    summary = trainer_pb2.JobSummary(job_id="j", started_at=to_timestamp(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)))
    assert optional_api_text(summary, "started_at") == "2026-01-02T03:04:05Z"
    assert optional_datetime(summary, "started_at") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert optional_api_text(summary, "finished_at") is None
    assert optional_datetime(summary, "finished_at") is None
