"""The filters of GET /tickets, decided without a database: statuses, window, cursor."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from myticket.core.ticket_search import (
    DEFAULT_WINDOW,
    REQUEUEABLE_STATUSES,
    STATUSES,
    SearchError,
    before_cursor,
    decode_cursor,
    encode_cursor,
    parse_instant,
    parse_statuses,
    search_window,
    shortened,
    walks_by_day,
)

NOW = datetime(2026, 12, 6, 9, 30, tzinfo=timezone.utc)


def test_statuses_repeated_or_comma_separated_and_all_by_default():
    assert parse_statuses(["rejected", "duplicate,rejected"]) == ("rejected", "duplicate")
    assert parse_statuses([]) == STATUSES
    assert parse_statuses([], REQUEUEABLE_STATUSES) == REQUEUEABLE_STATUSES
    assert parse_statuses([], REQUEUEABLE_STATUSES, ("rejected",)) == ("rejected",)
    with pytest.raises(SearchError, match="status 'processed'"):
        parse_statuses(["processed"], REQUEUEABLE_STATUSES)


def test_instants_are_utc_unless_they_say_otherwise():
    assert parse_instant("since", "2026-12-06") == datetime(2026, 12, 6, tzinfo=timezone.utc)
    assert parse_instant("since", "2026-12-06T10:00:00+01:00") == datetime(2026, 12, 6, 9, tzinfo=timezone.utc)
    with pytest.raises(SearchError, match="^until"):
        parse_instant("until", "last week")


def test_the_window_defaults_to_the_day_before_until_and_must_not_be_empty():
    assert search_window(None, None, NOW) == (NOW - DEFAULT_WINDOW, NOW)
    until = NOW - timedelta(days=3)
    assert search_window(None, until, NOW) == (until - DEFAULT_WINDOW, until)
    # An empty or reversed window is answered empty, not refused.
    assert search_window(NOW, NOW - timedelta(hours=1), NOW) == (NOW, NOW - timedelta(hours=1))


def test_a_cursor_round_trips_to_the_microsecond_and_bounds_the_next_page():
    ticket_id = str(uuid.uuid4())
    received_at = datetime(2026, 12, 5, 23, 59, 59, 123456, tzinfo=timezone.utc)
    cursor = encode_cursor(received_at, ticket_id)
    assert cursor.replace("-", "").replace("_", "").isalnum()
    assert decode_cursor(cursor) == (received_at, ticket_id)
    assert before_cursor(NOW, (received_at, ticket_id)) == received_at + timedelta(microseconds=1)
    assert before_cursor(received_at, (NOW, ticket_id)) == received_at
    for bad in ("", "x_y", f"20261205T235959Z_{ticket_id}", encode_cursor(received_at, ticket_id)[:-3],
                f"{'9' * 18}_{ticket_id}"):
        with pytest.raises(SearchError):
            decode_cursor(bad)


def test_an_error_is_cut_with_an_ellipsis_only_when_over_the_limit():
    assert shortened(None) is None
    assert shortened("x" * 200) == "x" * 200
    assert shortened("x" * 201) == "x" * 199 + "…"


def test_a_window_of_more_than_two_utc_days_is_walked_by_day():
    midnight = datetime(2026, 12, 6, tzinfo=timezone.utc)
    # The default window (24 hours before now) touches two days: one planned statement.
    assert not walks_by_day(NOW - DEFAULT_WINDOW, NOW)
    assert not walks_by_day(midnight - timedelta(days=2), midnight)  # ends at midnight: two days
    assert walks_by_day(midnight - timedelta(days=2), midnight + timedelta(microseconds=1))
    assert walks_by_day(midnight - timedelta(days=1, microseconds=1), midnight + timedelta(hours=1))
    assert walks_by_day(datetime(2026, 9, 7, tzinfo=timezone.utc), NOW)
    # Days are UTC days, whatever the offset the instants were given with.
    paris = timezone(timedelta(hours=1))
    assert not walks_by_day(datetime(2026, 12, 5, 1, 30, tzinfo=paris), datetime(2026, 12, 7, 0, 30, tzinfo=paris))
    assert walks_by_day(datetime(2026, 12, 5, 0, 30, tzinfo=paris), datetime(2026, 12, 7, 0, 30, tzinfo=paris))
    # An empty window is answered by the planned statement, which finds nothing.
    assert not walks_by_day(NOW, NOW)
    assert not walks_by_day(NOW, NOW - timedelta(days=30))
