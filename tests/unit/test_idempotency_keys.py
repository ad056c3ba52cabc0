"""Which header is a request's idempotency key, and which days of keys are alive."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from myticket.core.idempotency import BadIdempotencyKey, idempotency_key, oldest_live_day


def test_the_client_key_wins_and_a_webhook_id_is_kept_apart_by_a_prefix():
    assert idempotency_key("abc", "msg_1") == "abc"
    assert idempotency_key(None, "abc") == "webhook-id:abc"
    assert idempotency_key(None, None) is None
    for client_key in (None, "abc"):
        with pytest.raises(BadIdempotencyKey, match="webhook-id"):
            idempotency_key(client_key, "tab\there")


def test_keys_live_their_hours_counted_in_whole_days_from_their_first_use():
    now = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
    # A key first used on 5 December at 23:59 is still alive at 6 December 9:00 + 24 h.
    assert oldest_live_day(now, 24) == date(2026, 12, 5)
    assert oldest_live_day(datetime(2026, 12, 6, 23, 59, tzinfo=timezone.utc), 24) == date(2026, 12, 5)
    assert oldest_live_day(now, 72) == date(2026, 12, 3)
