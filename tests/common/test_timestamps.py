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


def _strftime_text(seconds: int) -> str:
    """The API text as api_text wrote it before its cached fast path."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_the_fast_timestamp_text_is_the_strftime_text() -> None:
    import random

    from google.protobuf.timestamp_pb2 import Timestamp

    first, last = -62_135_596_800, 253_402_300_799  # 0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z
    edges = [first, first + 1, last - 1, last, -1, 0, 1, 59, 60, 3599, 3600, 86_399, 86_400, -86_400, -86_401]
    edges += [951_782_400 + d for d in (-1, 0, 1, 86_399, 86_400)]  # 2000-02-29, a leap day
    edges += [4_107_542_400 + d for d in (-1, 0, 86_400)]  # 2100-03-01 (2100 is no leap year)
    rng = random.Random(28)
    values = edges + [rng.randint(first, last) for _ in range(20_000)]
    values += [rng.randint(0, 4_102_444_800) for _ in range(20_000)]  # 1970-2100, where ratings are
    for seconds in values:
        for nanos in (0, 999_999_999):
            assert api_text(Timestamp(seconds=seconds, nanos=nanos)) == _strftime_text(seconds), seconds
    for seconds in (first - 1, last + 1, 2**63 - 1, -(2**63)):  # outside datetime's years: the same error
        try:
            expected: object = _strftime_text(seconds)
        except Exception as error:  # the very type is compared
            expected = type(error)
        try:
            got: object = api_text(Timestamp(seconds=seconds))
        except Exception as error:
            got = type(error)
        assert got == expected, seconds
