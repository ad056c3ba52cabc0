"""Which UTC days maintenance works on: the partitions made ahead and the retention's
cutoff. Pure, so the choice of days is tested without a database or a clock."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from .ids import day_start

# Days after today whose partitions are made ahead: a round a day (the longest
# interval) still makes each day's partitions before the day begins.
DAYS_AHEAD = 2


def days_to_prepare(today: date) -> list[date]:
    """The days whose partitions each round makes: today and the DAYS_AHEAD next."""
    return [today + timedelta(days=offset) for offset in range(DAYS_AHEAD + 1)]


def retention_cutoff(today: date, retention_days: int) -> date:
    """The oldest day kept: days before it are past the retention. Today and the
    `retention_days` days before it are kept, so a ticket is kept at least
    `retention_days` whole days after its reception."""
    return today - timedelta(days=retention_days)


def midnight_unix_seconds(day: date) -> float:
    """The start of a UTC day, as unix seconds (the oldest-day gauge)."""
    return day_start(day).timestamp()


def utc_today() -> date:
    return datetime.now(timezone.utc).date()
