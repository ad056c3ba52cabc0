"""Which days maintenance makes partitions for, and which days retention lets go: pure."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from myticket.core.days import days_to_prepare, midnight_unix_seconds, retention_cutoff


def test_partitions_are_made_for_today_and_the_next_two_days_across_a_year_end():
    assert days_to_prepare(date(2026, 12, 31)) == [date(2026, 12, 31), date(2027, 1, 1), date(2027, 1, 2)]


@pytest.mark.parametrize(
    ("today", "retention_days", "cutoff"),
    [
        (date(2026, 11, 26), 1, date(2026, 11, 25)),  # today and yesterday kept
        (date(2026, 11, 26), 30, date(2026, 10, 27)),
        (date(2026, 3, 1), 1, date(2026, 2, 28)),
        (date(2028, 3, 1), 1, date(2028, 2, 29)),  # a leap day is a day like another
        (date(2027, 1, 5), 365, date(2026, 1, 5)),
    ],
)
def test_the_cutoff_is_today_minus_the_retention(today, retention_days, cutoff):
    assert retention_cutoff(today, retention_days) == cutoff


def test_a_ticket_is_kept_at_least_the_retention_in_whole_days():
    # Received at the last instant of a day, it goes when that day is before the cutoff.
    received = datetime(2026, 11, 20, 23, 59, 59, tzinfo=timezone.utc)
    first_day_purged = next(
        today for today in (date(2026, 11, 20 + n) for n in range(10))
        if received.date() < retention_cutoff(today, 3)
    )
    assert first_day_purged == date(2026, 11, 24)
    assert (midnight_unix_seconds(first_day_purged) - received.timestamp()) / 86400 >= 3


def test_the_oldest_day_gauge_is_that_day_s_utc_midnight():
    assert midnight_unix_seconds(date(1970, 1, 2)) == 86400
    assert midnight_unix_seconds(date(2026, 11, 26)) == datetime(2026, 11, 26, tzinfo=timezone.utc).timestamp()
