"""GetUserData's Timestamps made straight from the stored value
(``listing.stored_timestamp``) equal the ones made through an aware
datetime (``to_timestamp(_utc(value))``, as before), for every form the
databases hand back: SQLite's naive UTC text, naive and aware datetimes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from tagrate_common.timestamps import to_timestamp
from tagrate_dataset.library.listing import UserDataPage, UserImage, _utc, stored_timestamp


def test_stored_timestamps_equal_the_datetime_route() -> None:
    rng = random.Random(28)
    for _ in range(5000):
        moment = datetime(1, 1, 1, tzinfo=UTC) + timedelta(
            seconds=rng.randrange(0, 315_537_897_599), microseconds=rng.randrange(1_000_000)
        )
        naive = moment.replace(tzinfo=None)
        elsewhere = moment.astimezone(timezone(timedelta(hours=rng.randrange(-12, 14))))
        for value in (naive.isoformat(sep=" "), naive.isoformat(sep=" ", timespec="seconds"), naive, moment):
            assert stored_timestamp(value) == to_timestamp(_utc(value)), value
        if 1 < moment.year < 9999:  # an offset may carry the first and last days out of datetime's range
            assert stored_timestamp(elsewhere) == to_timestamp(_utc(elsewhere)), elsewhere
    assert stored_timestamp(None) is None


def test_a_page_of_stored_rows_reads_as_user_images() -> None:
    stored = [("a.png", 0.5, "2026-11-26 22:47:41.123456", 0.25, "personal"), ("b.png", None, None, None, None)]
    page = UserDataPage(stored, 2)
    at = datetime(2026, 11, 26, 22, 47, 41, 123456, tzinfo=UTC)
    assert page.images == [UserImage("a.png", 0.5, at, 0.25, "personal"), UserImage("b.png", None, None)]
    assert page == UserDataPage(page.images, 2) and page != UserDataPage(page.images, 3)
