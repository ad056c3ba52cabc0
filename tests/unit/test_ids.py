"""Delivery ids carry their reception time: the day partition a read goes to."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

from myticket.core.ids import new_delivery_id, received_at_of, utc_day

INSTANT = datetime(2026, 11, 26, 23, 59, 59, 999_999, tzinfo=timezone.utc)


def test_an_id_is_a_uuidv7_carrying_its_reception_time_to_the_millisecond():
    delivery_id, received_at = new_delivery_id(INSTANT)
    parsed = uuid.UUID(delivery_id)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert received_at == INSTANT.replace(microsecond=999_000)
    assert received_at_of(parsed) == received_at


def test_ids_order_as_their_reception_times_do():
    times = [INSTANT + timedelta(milliseconds=n) for n in range(0, 50, 7)]
    ids = [new_delivery_id(instant)[0] for instant in times]
    assert ids == sorted(ids)
    assert [uuid.UUID(i) for i in ids] == sorted(uuid.UUID(i) for i in ids)


def test_two_ids_of_the_same_millisecond_differ():
    first, _ = new_delivery_id(INSTANT)
    second, _ = new_delivery_id(INSTANT)
    assert first != second


def test_a_random_id_of_before_carries_no_time():
    assert received_at_of(uuid.uuid4()) is None


def test_a_version_7_id_past_year_9999_names_no_day():
    assert received_at_of(uuid.UUID("ffffffff-ffff-7fff-bfff-ffffffffffff")) is None


def test_the_day_of_an_instant_is_its_utc_day_whatever_its_zone():
    paris = timezone(timedelta(hours=1))
    assert utc_day(datetime(2026, 11, 27, 0, 30, tzinfo=paris)) == date(2026, 11, 26)
    assert utc_day(INSTANT) == date(2026, 11, 26)
