"""What GET /tickets and a bulk requeue choose tickets by, decided without I/O: the
filters, their reception window, the page cursor, and the record of one listed ticket.

Every search is bounded by reception time (the tables are partitioned by day on it):
without `since` it covers the DEFAULT_WINDOW before `until`, and `until` defaults to
the moment of the request. A cursor past the first page lowers `until` to itself, so a
later page reads no day newer than the page before.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

STATUSES = ("pending", "processed", "rejected", "duplicate")
# Processed tickets are not requeued: their lines are already counted in the catalogue;
# pending ones are in the queue already.
REQUEUEABLE_STATUSES = ("rejected", "duplicate")
DEFAULT_WINDOW = timedelta(hours=24)
# The error of a listed ticket is cut to this many characters (GET /tickets/{id} has it whole).
ERROR_CHARS = 200
ELLIPSIS = "…"


class SearchError(ValueError):
    """A filter that cannot be used, with the message for the client."""


@dataclass(frozen=True, slots=True)
class TicketSearch:
    """Which tickets: any of `statuses`, received in [since, until), and, when given,
    with that order reference or a line of that product."""

    statuses: tuple[str, ...]
    since: datetime
    until: datetime
    order_ref: str | None = None
    product_id: str | None = None


@dataclass(frozen=True, slots=True)
class TicketSummary:
    """One ticket as GET /tickets lists it."""

    id: str
    received_at: datetime
    status: str
    error: str | None
    warning_count: int
    order_ref: str | None
    duplicate_of: str | None


def parse_instant(name: str, text: str) -> datetime:
    """An ISO 8601 date or date-time (UTC unless it says otherwise), or SearchError."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SearchError(f"{name} {text!r} is not an ISO 8601 date or date-time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def parse_statuses(
    values: Iterable[str], allowed: tuple[str, ...] = STATUSES, default: tuple[str, ...] | None = None
) -> tuple[str, ...]:
    """`status=a&status=b` and `status=a,b` alike; `default` (every allowed status unless
    given) when none is."""
    chosen: list[str] = []
    for value in values:
        for status in value.split(","):
            status = status.strip()
            if status not in allowed:
                raise SearchError(f"status {status!r} is not one of {', '.join(allowed)}")
            if status not in chosen:
                chosen.append(status)
    return tuple(chosen) if chosen else (default or allowed)


def search_window(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) with the defaults: until is now, since is DEFAULT_WINDOW before until.
    A window that ends before it starts holds no ticket: it is answered empty, not refused
    (whatever two valid instants a client sends, the answer is a list)."""
    until = until if until is not None else now
    since = since if since is not None else until - DEFAULT_WINDOW
    return since, until


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# A cursor's instant: microseconds since 1970, at most 17 digits (until year 5138), so
# that every cursor of the documented form names an instant PostgreSQL can compare.
_CURSOR = re.compile(r"([0-9]{1,17})_([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})")


def encode_cursor(received_at: datetime, ticket_id: str) -> str:
    """The `after` of the next page: the last ticket's reception time (microseconds since
    1970) and id. URL-safe as it is."""
    return f"{(received_at - _EPOCH) // timedelta(microseconds=1)}_{ticket_id}"


def decode_cursor(text: str) -> tuple[datetime, str]:
    """(received_at, id) of a cursor made by `encode_cursor`, or SearchError."""
    match = _CURSOR.fullmatch(text)
    if match is None:
        raise SearchError(f"after {text!r} is not a cursor from a previous page's next_after")
    return _EPOCH + timedelta(microseconds=int(match.group(1))), str(uuid.UUID(match.group(2)))


def before_cursor(until: datetime, after: tuple[datetime, str] | None) -> datetime:
    """The window's end for a page after `after`: nothing newer than the cursor is read,
    so no day newer than the cursor's is planned either."""
    if after is None:
        return until
    return min(until, after[0] + timedelta(microseconds=1))


# A window touching at most this many UTC days is read by one statement planned with its
# bounds, which prunes it to those days' partitions; a wider one is walked day by day with
# a cached plan (migration 0008), as planning every day of a wide window costs more than
# reading a page (16-30 ms at 90 days, for about 1 ms of execution).
PLANNED_WINDOW_DAYS = 2


def walks_by_day(since: datetime, until: datetime) -> bool:
    """Whether the window [since, until) touches more than PLANNED_WINDOW_DAYS UTC days."""
    if until <= since:
        return False
    first = since.astimezone(timezone.utc).date()
    last = (until - timedelta(microseconds=1)).astimezone(timezone.utc).date()
    return (last - first).days + 1 > PLANNED_WINDOW_DAYS


def shortened(error: str | None, limit: int = ERROR_CHARS) -> str | None:
    """An error cut to `limit` characters, the cut marked with an ellipsis. The query
    returns one character more than `limit`, so a cut is known without the whole text."""
    if error is None or len(error) <= limit:
        return error
    return error[: limit - 1] + ELLIPSIS
