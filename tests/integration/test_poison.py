"""One bad input must never cost anyone else: database errors classified by SQLSTATE,
a ticket PostgreSQL refuses isolated and rejected, and worker claims bounded in bytes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import string
import uuid
from datetime import datetime, timezone

import psycopg2.errors
import pytest

from myticket.config import ConfigError, load_settings
from myticket.telemetry.metrics import Metrics
from myticket.core.database_errors import DataRejected, FailureKind, failure_kind
from myticket.core.domain import IncomingTicket
from myticket.core.parser import parse_ticket
from myticket.core.processing import CLAIM_COST_PER_LINE, body_lines
from myticket.db.errors import database_error
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..helpers import post, settled, ticket_with
from ..waiting import wait_until

# Over PostgreSQL's btree limit (about 2,700 bytes an index row), and incompressible
# (random letters), so the index on ticket_lines.product_id and the products key refuse it.
def random_text(length: int, *, seed: int) -> str:
    generator = random.Random(seed)
    return "".join(generator.choice(string.ascii_letters + string.digits) for _ in range(length))


OVERSIZED_PRODUCT_ID = random_text(3000, seed=10)


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        (None, FailureKind.UNAVAILABLE),  # no answer from the server: a dropped connection
        ("", FailureKind.UNAVAILABLE),
        ("08006", FailureKind.UNAVAILABLE),  # connection failure
        ("08001", FailureKind.UNAVAILABLE),  # cannot establish a connection
        ("53100", FailureKind.UNAVAILABLE),  # disk full
        ("53300", FailureKind.UNAVAILABLE),  # too many connections
        ("57P01", FailureKind.UNAVAILABLE),  # admin shutdown
        ("57P03", FailureKind.UNAVAILABLE),  # cannot connect now (starting up)
        ("58030", FailureKind.UNAVAILABLE),  # I/O error
        ("25006", FailureKind.UNAVAILABLE),  # read-only transaction (failover)
        ("25P03", FailureKind.UNAVAILABLE),  # idle-in-transaction timeout: the server closed the session
        ("F0000", FailureKind.UNAVAILABLE),  # config file error
        ("F0001", FailureKind.UNAVAILABLE),  # lock file exists
        ("3D000", FailureKind.UNAVAILABLE),  # database does not exist
        ("28P01", FailureKind.UNAVAILABLE),  # password authentication failed
        ("40001", FailureKind.CONFLICT),  # serialization failure
        ("40P01", FailureKind.CONFLICT),  # deadlock detected
        ("55P03", FailureKind.CONFLICT),  # lock not available
        ("57014", FailureKind.CONFLICT),  # statement timeout
        ("54000", FailureKind.DATA),  # program limit exceeded: index row too large
        ("22001", FailureKind.DATA),  # string too long
        ("22003", FailureKind.DATA),  # numeric value out of range
        ("22P05", FailureKind.DATA),  # untranslatable character
        ("23505", FailureKind.DATA),  # unique violation
        ("42804", FailureKind.DATA),  # datatype mismatch
        ("XX000", FailureKind.DATA),  # an unknown code never pauses everyone
    ],
)
def test_database_errors_are_classified_by_sqlstate(sqlstate, kind):
    assert failure_kind(sqlstate) is kind


async def test_a_ticket_postgresql_refuses_is_rejected_and_the_others_are_processed(quiet_app, db):
    repository = quiet_app.server.app[REPOSITORY]
    now = datetime.now(timezone.utc)
    good_before = [ticket_with(str(n), f"P{n}", f"Product {n}", "1.00", received_at=now) for n in range(3)]
    poison = ticket_with("poison", OVERSIZED_PRODUCT_ID, "Too long", "1.00", received_at=now)
    good_after = [ticket_with(str(n), f"P{n}", f"Product {n}", "2.00", received_at=now) for n in range(3, 6)]
    # One insert: the poison ticket sits in the middle of the worker's first claim.
    await repository.store_tickets(tickets=[*good_before, poison, *good_after])

    worker = TicketWorker(repository, Metrics(), idle_poll_seconds=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        async def none_pending() -> bool:
            return "pending" not in dict(db.rows("status_counts"))

        await wait_until(none_pending, timeout=10, what="every ticket to leave pending")
    finally:
        stop.set()
        await running

    rejected = await repository.ticket(ticket_id=poison.id)
    assert rejected.status == "rejected"
    assert rejected.error  # the reason: PostgreSQL's refusal, or the parser's
    assert (await repository.ticket_lines(ticket_id=poison.id, after=0, limit=100)) == ([], None)
    for good in good_before + good_after:
        assert (await repository.ticket(ticket_id=good.id)).status == "processed"
    assert db.value("count_lines") == 6
    assert (await repository.product(product_id=OVERSIZED_PRODUCT_ID)) is None


async def test_through_http_a_refused_ticket_blocks_no_later_ticket(client):
    bodies = [
        f"Order: {n}\nTotal: 1.00\n\nproduct,product_id,price\nA{n},Q{n},1.00\n".encode() for n in range(2)
    ]
    poison = f"Order: p\nTotal: 1.00\n\nproduct,product_id,price\nBig,{OVERSIZED_PRODUCT_ID},1.00\n".encode()
    first = await post(client, bodies[0])
    bad = await post(client, poison)
    last = await post(client, bodies[1])

    assert (await settled(client, bad))["status"] == "rejected"
    assert (await settled(client, first))["status"] == "processed"
    assert (await settled(client, last))["status"] == "processed"


def test_a_data_refusal_is_named_in_the_rejection():
    """The worker's rejection carries PostgreSQL's code, condition and message."""

    class Refused(psycopg2.errors.ProgramLimitExceeded):
        pgcode = "54000"

    error = database_error("insert_ticket_lines", Refused("index row size 3016 exceeds btree version 4 maximum 2704"))
    assert isinstance(error, DataRejected)
    assert error.sqlstate == "54000"
    assert error.reason == "54000 program_limit_exceeded: index row size 3016 exceeds btree version 4 maximum 2704"


def large_ticket(number: int, size: int) -> IncomingTicket:
    """A distinct ticket of `size` bytes: one line, padded with a long product name."""
    head = f"Order: {number}\nTotal: 1.00\n\nproduct,product_id,price\n".encode()
    tail = f",L{number},1.00\n".encode()
    name = b"n" * (size - len(head) - len(tail))
    return IncomingTicket(str(uuid.uuid4()), datetime.now(timezone.utc), "text/plain", head + name + tail)


def spy_on_claims(repository, monkeypatch) -> list[list[int]]:
    """Record the body sizes of every claim the repository hands out."""
    claims: list[list[int]] = []
    real_claim = repository.claim_pending

    @contextlib.asynccontextmanager
    async def claim_pending(**kwargs):
        async with real_claim(**kwargs) as batch:
            claims.append([len(ticket.body) for ticket in batch.tickets])
            yield batch

    monkeypatch.setattr(repository, "claim_pending", claim_pending)
    return claims


async def test_a_claim_of_one_mebibyte_tickets_holds_no_more_than_its_byte_budget(quiet_app, db, monkeypatch):
    repository = quiet_app.server.app[REPOSITORY]
    mebibyte = 1024 * 1024
    tickets = [large_ticket(n, mebibyte) for n in range(10)]
    for ticket in tickets:
        await repository.store_tickets(tickets=[ticket])
    claims = spy_on_claims(repository, monkeypatch)
    # The budget counts each ticket's lines too (a handful here): three tickets' worth.
    budget = 3 * claim_cost(tickets[0].body)

    handled = await TicketWorker(repository, Metrics(), batch_size=200, batch_max_bytes=budget).drain()

    assert handled == 10  # one drain: a claim cut short by the budget is not an empty queue
    assert "pending" not in dict(db.rows("status_counts"))
    assert [len(claim) for claim in claims if claim] == [3, 3, 3, 1]
    assert max(sum(claim) for claim in claims) <= budget


def claim_cost(body: bytes) -> int:
    return len(body) + body_lines(body) * CLAIM_COST_PER_LINE


def many_lines_ticket(number: int, lines: int) -> IncomingTicket:
    """A distinct ticket of `lines` short product lines: small in bytes, large parsed."""
    rows = "".join(f"p{i},P{number}-{i},1.00\n" for i in range(lines))
    body = f"Order: {number}\nTotal: {lines}.00\n\nproduct,product_id,price\n{rows}".encode()
    return IncomingTicket(str(uuid.uuid4()), datetime.now(timezone.utc), "text/plain", body)


async def test_a_claim_counts_the_lines_parsing_will_hold_not_only_the_bytes(quiet_app, db, monkeypatch):
    """Six tickets of 2,000 lines are 6 x 40 kB of bodies, far inside a 1 MiB byte budget,
    but about 4 MiB each once parsed: the claim takes them one by one."""
    repository = quiet_app.server.app[REPOSITORY]
    tickets = [many_lines_ticket(n, 2000) for n in range(6)]
    await repository.store_tickets(tickets=tickets)
    assert sum(len(ticket.body) for ticket in tickets) < 1024 * 1024
    claims = spy_on_claims(repository, monkeypatch)
    budget = 1024 * 1024 + 2 * claim_cost(tickets[0].body)

    handled = await TicketWorker(repository, Metrics(), batch_size=200, batch_max_bytes=budget).drain()

    assert handled == 6
    assert dict(db.rows("status_counts")) == {"processed": 6}
    assert [len(claim) for claim in claims if claim] == [2, 2, 2]


async def test_a_ticket_larger_than_the_byte_budget_is_still_claimed_alone(quiet_app, db, monkeypatch):
    repository = quiet_app.server.app[REPOSITORY]
    await repository.store_tickets(tickets=[large_ticket(n, 100_000) for n in range(3)])
    claims = spy_on_claims(repository, monkeypatch)

    handled = await TicketWorker(repository, Metrics(), batch_max_bytes=1000).drain()

    assert handled == 3
    assert [len(claim) for claim in claims if claim] == [1, 1, 1]
    assert "pending" not in dict(db.rows("status_counts"))


def test_the_worker_byte_budget_is_a_setting_of_at_least_one_byte():
    assert load_settings({}).worker_batch_max_bytes == 8 * 1024 * 1024
    assert load_settings({"MYTICKET_WORKER_BATCH_MAX_BYTES": "65536"}).worker_batch_max_bytes == 65536
    with pytest.raises(ConfigError) as raised:
        load_settings({"MYTICKET_WORKER_BATCH_MAX_BYTES": "0"})
    assert str(raised.value) == "MYTICKET_WORKER_BATCH_MAX_BYTES: must be at least 1, got 0"


@pytest.mark.parametrize("body", [
    b"", b"one line", b"a\nb\nc\n", b"a\r\nb\r\n", b"a\rb\rc\rd", b"\x00\n\xff\r\n\\\n", "x\ny".encode("utf-16"),
])
def test_sql_counts_the_lines_of_a_body_as_ingest_does(db, body):
    """Requeue, restore and migration 0006 count in SQL what ingest counts in Python."""
    assert db.value("body_lines_in_sql", {"body": body}) == body_lines(body)


async def test_every_way_into_the_queue_stores_the_lines_of_the_body(quiet_app, db):
    """Ingest (and the spool's replay, which stores through it), restore and requeue."""
    repository = quiet_app.server.app[REPOSITORY]
    ticket = many_lines_ticket(1, 30)
    await repository.store_tickets(tickets=[ticket])
    assert db.rows("pending_body_lines") == [(ticket.id, body_lines(ticket.body))]
    await TicketWorker(repository, Metrics()).drain()
    assert await repository.requeue(statuses=["processed"], since=None) == 1
    assert db.rows("pending_body_lines") == [(ticket.id, body_lines(ticket.body))]


async def test_inline_a_ticket_that_runs_the_worker_out_of_memory_is_rejected_after_its_deaths(quiet_app, db):
    """Inline (MYTICKET_WORKER=inline) the worker shares the HTTP process, which must live
    on: MemoryError ends the claim like a death (its journal row stays), the loop goes on,
    the claim's other tickets are retried alone, and the killer is rejected after its
    deaths. (A worker process of its own exits instead: tests/processes/test_worker_deaths.)"""
    repository = quiet_app.server.app[REPOSITORY]
    before = many_lines_ticket(1, 3)
    killer = many_lines_ticket(0, 3)
    after = [many_lines_ticket(n, 3) for n in range(2, 6)]
    await repository.store_tickets(tickets=[before, killer, *after])

    def parse_or_run_out(body: bytes):
        if body.startswith(b"Order: 0\n"):
            raise MemoryError
        return parse_ticket(body)

    worker = TicketWorker(repository, Metrics(), max_attempts=3, parse=parse_or_run_out, idle_poll_seconds=0.05)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def none_pending() -> bool:
        return "pending" not in dict(db.rows("status_counts"))

    try:
        await wait_until(none_pending, timeout=30, what="every ticket to be processed or rejected")
    finally:
        stop.set()
        await running
    assert db.rows("rejections") == [(killer.id, "worker died 3 times while processing this ticket")]
    assert dict(db.rows("status_counts")) == {"processed": 5, "rejected": 1}
    assert db.value("worker_claims_left") == 0
