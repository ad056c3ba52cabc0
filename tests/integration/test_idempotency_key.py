"""Idempotency-Key on POST /ticket: a retry with the same key and body is answered the
first id and stores nothing; another body is 409; keys live in PostgreSQL, so another
process sees them; they expire with their day partition, dropped by maintenance."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from myticket.core.domain import IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.telemetry.metrics import Metrics
from myticket.web.app import init_app
from myticket.web.typedefs import REPOSITORY
from myticket.worker.maintenance import Maintenance

from ..paths import REFERENCE_TICKET


async def post(client, body: bytes, key: str | None):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await client.post("/ticket", data=body, headers=headers)


async def test_a_retry_with_the_same_key_and_body_is_the_first_ticket_and_stores_nothing(quiet_app, db):
    first = await post(quiet_app, REFERENCE_TICKET, "abc-123")
    assert first.status == 202 and "Idempotent-Replayed" not in first.headers
    first_id = (await first.json())["id"]

    retry = await post(quiet_app, REFERENCE_TICKET, "abc-123")

    assert retry.status == 202
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert (await retry.json())["id"] == first_id
    assert db.value("count_tickets") == 1
    other_key = await post(quiet_app, REFERENCE_TICKET, "abc-124")
    assert (await other_key.json())["id"] != first_id
    assert db.value("count_tickets") == 2


async def test_the_same_key_with_another_body_is_409_and_stores_nothing(quiet_app, db):
    first_id = (await (await post(quiet_app, REFERENCE_TICKET, "k-1")).json())["id"]

    refused = await post(quiet_app, REFERENCE_TICKET + b"\n", "k-1")

    assert refused.status == 409
    assert first_id in (await refused.json())["error"]
    assert db.value("count_tickets") == 1


async def test_without_a_key_every_post_is_a_new_ticket(quiet_app, db):
    ids = {(await (await post(quiet_app, REFERENCE_TICKET, None)).json())["id"] for _ in range(2)}
    assert len(ids) == 2 and db.value("count_tickets") == 2
    assert db.value("count_idempotency_keys") == 0


@pytest.mark.parametrize(
    ("key", "says"),
    [("", "empty"), ("k" * 256, "longer than 255"), ("café", "printable ASCII"), ("tab\tkey", "printable ASCII")],
)
async def test_a_key_that_is_not_printable_ascii_of_at_most_255_characters_is_400(quiet_app, db, key, says):
    response = await quiet_app.post("/ticket", data=REFERENCE_TICKET, headers=[("Idempotency-Key", key)])
    assert response.status == 400
    assert says in (await response.json())["error"]
    assert db.value("count_tickets") == 0


async def test_a_key_of_255_characters_is_taken(quiet_app, db):
    key = "".join(chr(32 + n % 95) for n in range(255))
    assert (await post(quiet_app, REFERENCE_TICKET, key)).status == 202
    assert (await post(quiet_app, REFERENCE_TICKET, key)).headers["Idempotent-Replayed"] == "true"


async def test_another_process_sees_the_key(aiohttp_client, settings, db):
    one = await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False)))
    other = await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False)))
    first_id = (await (await post(one, REFERENCE_TICKET, "shared")).json())["id"]
    retry = await post(other, REFERENCE_TICKET, "shared")
    assert (await retry.json())["id"] == first_id and retry.headers["Idempotent-Replayed"] == "true"
    assert db.value("count_tickets") == 1


async def test_keys_past_their_lifetime_are_forgotten_and_their_days_dropped(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    now = datetime.now(timezone.utc)
    digest = hashlib.sha256(REFERENCE_TICKET).digest()
    old_id, old_at = new_delivery_id(now - timedelta(hours=60))
    recent_id, recent_at = new_delivery_id(now - timedelta(hours=1))
    await repository.store_tickets(tickets=[
        IncomingTicket(old_id, old_at, None, REFERENCE_TICKET, idempotency_key="old", body_sha256=digest),
        IncomingTicket(recent_id, recent_at, None, REFERENCE_TICKET, idempotency_key="recent", body_sha256=digest),
    ])
    assert db.value("count_idempotency_keys") == 2
    old_day = old_at.date()
    assert db.rows("partitions_of_day", {"day": old_day}) != []

    # Past 24 hours by more than a whole day: not a replay any more, stored anew.
    fresh = await post(quiet_app, REFERENCE_TICKET, "old")
    assert "Idempotent-Replayed" not in fresh.headers and (await fresh.json())["id"] != old_id
    assert (await (await post(quiet_app, REFERENCE_TICKET, "recent")).json())["id"] == recent_id

    report = await Maintenance(repository, Metrics(), interval_seconds=3600, idempotency_key_hours=24).run_round()

    assert report.idempotency_days_dropped >= 1
    assert ("idempotency_keys",) not in db.rows("partitions_of_day", {"day": old_day})
    assert ("deliveries",) in db.rows("partitions_of_day", {"day": old_day})  # tickets keep their own lifetime
    assert (await (await post(quiet_app, REFERENCE_TICKET, "recent")).json())["id"] == recent_id
