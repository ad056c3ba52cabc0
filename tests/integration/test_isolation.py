"""One bad input never costs anyone else: a bad header is refused alone, and a batch the
store refuses is split until only the ticket that causes it fails."""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from datetime import datetime, timezone

import pytest

from myticket.intake.group_commit import (
    GroupCommitIngest, batch_length, isolates_culprit, store_isolating_failures,
)
from myticket.core.database_errors import DatabaseUnavailable
from myticket.core.domain import IncomingTicket
from myticket.web.errors import ApiError
from myticket.web.tickets import content_type_to_store
from myticket.intake.spool import SpoolUnavailable
from myticket.web.typedefs import INGEST, REPOSITORY

from ..helpers import confirmed_store, gate_database_writes
from ..paths import REFERENCE_TICKET
from ..waiting import wait_until


def tickets(count: int, *, body: bytes = REFERENCE_TICKET) -> list[IncomingTicket]:
    now = datetime.now(timezone.utc)
    return [IncomingTicket(str(uuid.uuid4()), now, "text/plain", body) for _ in range(count)]


async def raw_post(client, head: bytes, body: bytes) -> tuple[bytes, bytes]:
    """POST with header bytes no HTTP client library would send; the status and body."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(
        b"POST /ticket HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + head
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), timeout=60)
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return status_line.split(b" ")[1], rest.partition(b"\r\n\r\n")[2]


async def test_a_non_ascii_content_type_among_a_thousand_concurrent_tickets_fails_only_itself(client, db):
    # Hold the first commit until the test client's 100 connections are all waiting, so
    # that the poisoned request, if it is admitted, shares the next batch with 99 others.
    ingest = client.server.app[INGEST]
    repository = client.server.app[REPOSITORY]
    gate = gate_database_writes(repository)
    good_bodies = [REFERENCE_TICKET.replace(b"123456", b"%d" % n) for n in range(1000)]
    good = asyncio.gather(*(client.post("/ticket", data=body, headers={"Content-Type": "text/html"})
                            for body in good_bodies))

    async def client_connections_all_waiting() -> bool:
        return ingest.waiting == 100

    await wait_until(client_connections_all_waiting, timeout=10, what="100 tickets waiting")
    poisoned = asyncio.create_task(raw_post(client, b"Content-Type: \xff\r\n", REFERENCE_TICKET))

    async def poisoned_refused_or_admitted() -> bool:
        return poisoned.done() or ingest.waiting == 101

    await wait_until(poisoned_refused_or_admitted, timeout=10, what="the poisoned request to be answered or admitted")
    gate.set()
    responses = await good
    poisoned_status, poisoned_answer = await poisoned

    statuses = [response.status for response in responses]
    assert statuses.count(202) == 1000
    assert poisoned_status == b"400"
    assert b"Content-Type" in poisoned_answer
    assert db.value("count_tickets") == 1000


async def test_a_ticket_the_database_refuses_fails_alone_and_its_batch_neighbours_are_stored(
    quiet_app, db, caplog, database_url
):
    # The handler refuses such a header; this is the second line of defence, should
    # anything else in a ticket ever make its INSERT fail.
    store = await confirmed_store(quiet_app.server.app[REPOSITORY], None, database_url)
    batches: list[int] = []
    ingest = GroupCommitIngest(store, batch_max_size=64, max_waiting=1000, on_batch_stored=batches.append)
    batch = tickets(200)
    culprit = batch[137] = IncomingTicket(str(uuid.uuid4()), batch[0].received_at, "\udcff", REFERENCE_TICKET)

    with caplog.at_level(logging.WARNING, logger="myticket.intake.group_commit"):
        results = await asyncio.gather(*(ingest.submit(ticket) for ticket in batch), return_exceptions=True)

    failed = [ticket.id for ticket, result in zip(batch, results) if result is not None]
    assert failed == [culprit.id]
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and culprit.id in warnings[0] and "1 of " in warnings[0]
    assert sorted(row[0] for row in db.rows("stored_ids")) == sorted(t.id for t in batch if t is not culprit)
    assert sum(batches) == 199


class RefusingStore:
    """A store that refuses every batch holding one given ticket, and records its calls."""

    def __init__(self, culprit_id: str, error: Exception) -> None:
        self.culprit_id = culprit_id
        self.error = error
        self.calls: list[list[str]] = []
        self.stored: list[str] = []

    async def __call__(self, batch) -> None:
        ids = [ticket.id for ticket in batch]
        self.calls.append(ids)
        if self.culprit_id in ids:
            raise self.error
        self.stored.extend(ids)


@pytest.mark.parametrize("position", [0, 1, 100, 254, 255])
async def test_a_batch_refused_because_of_one_ticket_is_split_until_only_that_ticket_fails(position):
    batch = tickets(256)
    store = RefusingStore(batch[position].id, ValueError("cannot encode"))
    stored_sizes: list[int] = []

    outcomes = await store_isolating_failures(store, batch, on_stored=stored_sizes.append)

    assert [index for index, outcome in enumerate(outcomes) if outcome is not None] == [position]
    assert outcomes[position] is store.error
    assert sorted(store.stored) == sorted(ticket.id for index, ticket in enumerate(batch) if index != position)
    assert sum(stored_sizes) == 255
    # Halving: two statements per level of a binary search, plus the first.
    assert len(store.calls) == 1 + 2 * int(math.log2(256))


@pytest.mark.parametrize("error", [DatabaseUnavailable("insert_tickets: connection refused"), SpoolUnavailable("full")])
async def test_unavailability_fails_the_whole_batch_without_splitting(error):
    batch = tickets(8)
    store = RefusingStore(batch[3].id, error)

    outcomes = await store_isolating_failures(store, batch)

    assert outcomes == [error] * 8
    assert len(store.calls) == 1


def test_only_a_batch_of_several_tickets_refused_for_another_reason_than_unavailability_is_split():
    assert isolates_culprit(ValueError("bad value"), 2)
    assert not isolates_culprit(ValueError("bad value"), 1)
    assert not isolates_culprit(DatabaseUnavailable("connect: timeout"), 2)
    assert not isolates_culprit(SpoolUnavailable("disk full"), 2)


@pytest.mark.parametrize(
    ("sizes", "max_tickets", "max_bytes", "expected"),
    [
        ([10] * 5, 3, 1000, 3),      # the count bound
        ([10] * 5, 100, 25, 2),      # the byte bound
        ([10] * 5, 100, 30, 3),      # exactly at the byte bound
        ([500, 1], 100, 100, 1),     # a ticket over the byte bound still leaves, alone
        ([1, 500], 100, 100, 1),     # and does not join a batch that would go over it
        ([], 100, 100, 0),
    ],
)
def test_a_batch_is_bounded_in_tickets_and_in_bytes_but_always_takes_one(sizes, max_tickets, max_bytes, expected):
    assert batch_length(sizes, max_tickets=max_tickets, max_bytes=max_bytes) == expected


@pytest.mark.parametrize("value", [None, "text/html", "text/plain; charset=utf-8", "x" * 255])
def test_a_printable_ascii_content_type_is_stored_as_sent(value):
    assert content_type_to_store(value) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [("\udcff", "printable ASCII, got '\\xff'"), ("café", "printable ASCII"), ("a\tb", "printable ASCII"),
     ("x" * 256, "longer than 255")],
)
def test_any_other_content_type_is_refused_400_naming_the_header(value, message):
    with pytest.raises(ApiError) as refused:
        content_type_to_store(value)
    assert refused.value.status == 400
    assert refused.value.message.startswith("Content-Type header")
    assert message in refused.value.message
