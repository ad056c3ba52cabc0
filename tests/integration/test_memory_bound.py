"""Body bytes held in memory are bounded (MYTICKET_MAX_PENDING_BYTES), whatever ends each
request; a declared length over the limit is refused from the request head, and
`Expect: 100-continue` is answered from the declared length."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import BaseRunner

from myticket.web.app import init_app
from myticket.web.server import HTTP_SERVER_OPTIONS
from myticket.intake.budget import ByteBudget
from myticket.web.typedefs import BODY_BUDGET, INGEST, REPOSITORY, SETTINGS

from ..helpers import gate_database_writes, sample
from ..paths import REFERENCE_TICKET
from ..waiting import wait_until

BODY = REFERENCE_TICKET + b"#" * (10_000 - len(REFERENCE_TICKET))


def test_a_reservation_never_takes_the_budget_past_its_limit_and_is_released_once():
    budget = ByteBudget(100)
    first, second = budget.reservation(), budget.reservation()

    assert first.grow(60)
    assert not second.grow(41)
    assert second.grow(40)
    assert not first.grow(1)
    assert budget.reserved == 100

    first.release()
    first.release()
    assert budget.reserved == 40
    second.release()
    assert budget.reserved == 0


class RawRequest:
    """One connection driven byte by byte, as a slow sender would."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, client, head: bytes) -> RawRequest:
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(b"POST /ticket HTTP/1.1\r\nHost: t\r\n" + head + b"\r\n")
        await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout=timeout)
        status_line, *header_lines = head.decode().split("\r\n")[:-2]
        headers = dict(line.split(": ", 1) for line in header_lines)
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("Content-Length", 0))), timeout=timeout)
        return int(status_line.split(" ")[1]), headers, body

    async def answer_within(self, seconds: float) -> tuple[int, dict[str, str], bytes] | None:
        """The answer, or None when none has come after `seconds`."""
        try:
            return await self.answer(timeout=seconds)
        except TimeoutError:
            return None

    def close(self) -> None:
        self.writer.close()


class ServedAsTheServiceServes(TestServer):
    """The app served as `myticket serve` serves it. aiohttp's TestServer cancels the
    handler of a request whose sender leaves; web.run_app does not, and the handler
    meets ConnectionResetError while reading the body: the path these tests follow."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return await super()._make_runner(**{**kwargs, "handler_cancellation": False})


@pytest.fixture
async def bounded_client(aiohttp_client, settings, db):
    """Room for five 10,000-byte bodies in memory; bodies must arrive within 3 seconds.
    Every request comes from 127.0.0.1, so one sender may hold all (shares have tests of
    their own: test_fair_senders)."""
    server = ServedAsTheServiceServes(await init_app(dataclasses.replace(
        settings, run_worker=False, max_body_bytes=len(BODY), max_pending_bytes=5 * len(BODY),
        read_timeout_seconds=3, sender_share_percent=100,
    )))
    await server.start_server(**HTTP_SERVER_OPTIONS)
    return await aiohttp_client(server)


async def test_bodies_hold_only_the_bytes_that_arrived_and_every_exit_releases_them(bounded_client, db):
    budget = bounded_client.server.app[BODY_BUDGET]
    head = b"Content-Length: %d\r\n" % len(BODY)
    senders = [await RawRequest.open(bounded_client, head) for _ in range(11)]

    # Eleven requests declare 10,000 bytes each, twice the budget: a declared length is
    # not reserved, only the bytes that arrive are. Ten half bodies fill the budget.
    for number, sender in enumerate(senders[:10], start=1):
        await sender.send(BODY[:5000])

        async def reserved(expected: int = number * 5000) -> bool:
            return budget.reserved == expected

        await wait_until(reserved, timeout=10, what=f"{number} half bodies reserved")
    await senders[10].send(BODY[:5000])
    status, headers, body = await senders[10].answer()
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "too many body bytes waiting" in json.loads(body)["error"]
    assert budget.reserved == 10 * 5000

    # Six leave (their bytes come back), three complete, one never finishes (408).
    for sender in senders[4:10]:
        sender.close()

    async def departures_refused() -> bool:
        text = await (await bounded_client.get("/metrics")).text()
        return sample(text, "myticket_tickets_refused_total", {"reason": "client_disconnected"}) == 6

    await wait_until(departures_refused, timeout=10, what="the server to see six senders leave")
    assert budget.reserved == 4 * 5000
    completing, stalling = senders[:3], senders[3]
    for sender in completing:
        await sender.send(BODY[5000:])
    statuses = [status for status, _, _ in await asyncio.gather(*(sender.answer() for sender in completing))]
    assert statuses == [202, 202, 202]
    assert budget.reserved == 5000
    assert (await stalling.answer())[0] == 408
    assert budget.reserved == 0
    assert db.value("count_tickets") == 3
    for sender in senders:
        sender.close()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


async def test_a_chunked_body_is_counted_as_its_chunks_arrive(bounded_client, db):
    budget = bounded_client.server.app[BODY_BUDGET]
    declared = [await RawRequest.open(bounded_client, b"Content-Length: %d\r\n" % len(BODY)) for _ in range(4)]
    for sender in declared:
        await sender.send(BODY[:9000])
    chunked = await RawRequest.open(bounded_client, b"Transfer-Encoding: chunked\r\n")
    await chunked.send(chunk(BODY[:6000]))

    async def chunk_reserved() -> bool:
        return budget.reserved == 4 * 9000 + 6000

    await wait_until(chunk_reserved, timeout=10, what="the first chunk to be reserved")
    # 8,000 bytes are left: a second chunked body's first 9,000 bytes do not fit.
    refused = await RawRequest.open(bounded_client, b"Transfer-Encoding: chunked\r\n")
    await refused.send(chunk(BODY[:9000]))
    status, headers, _ = await refused.answer()
    assert status == 503 and headers["Retry-After"] == "1"

    await chunked.send(chunk(BODY[6000:]) + b"0\r\n\r\n")
    for sender in declared:
        await sender.send(BODY[9000:])
    assert [(await sender.answer())[0] for sender in [*declared, chunked]] == [202] * 5
    assert budget.reserved == 0
    assert db.value("count_tickets") == 5
    for sender in [*declared, chunked, refused]:
        sender.close()


async def test_an_admitted_ticket_keeps_its_bytes_reserved_until_committed_even_if_its_sender_leaves(
    bounded_client, db
):
    app = bounded_client.server.app
    budget, ingest, repository = app[BODY_BUDGET], app[INGEST], app[REPOSITORY]
    gate = gate_database_writes(repository)
    sender = await RawRequest.open(bounded_client, b"Content-Length: %d\r\n" % len(BODY))
    await sender.send(BODY)

    async def admitted() -> bool:
        return ingest.waiting == 1

    await wait_until(admitted, timeout=10, what="the ticket to be admitted")
    sender.close()
    await sender.writer.wait_closed()
    assert budget.reserved == len(BODY)
    gate.set()

    async def committed_and_released() -> bool:
        return db.value("count_tickets") == 1 and budget.reserved == 0

    await wait_until(committed_and_released, timeout=10, what="the ticket to be committed and its bytes released")


async def test_expect_100_continue_over_the_body_limit_gets_413_instead_of_continue(bounded_client, db):
    over = await RawRequest.open(bounded_client, b"Expect: 100-continue\r\nContent-Length: %d\r\n" % (len(BODY) + 1))

    status, headers, body = await over.answer()

    assert status == 413
    assert "over the limit" in json.loads(body)["error"]
    assert headers["Connection"] == "close"
    over.close()

    within = await RawRequest.open(bounded_client, b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(BODY))
    interim = await asyncio.wait_for(within.reader.readuntil(b"\r\n\r\n"), timeout=60)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await within.send(BODY)
    assert (await within.answer())[0] == 202
    within.close()
    assert db.value("count_tickets") == 1


async def test_expect_100_continue_beyond_the_byte_bound_gets_503_instead_of_continue(bounded_client, db):
    budget = bounded_client.server.app[BODY_BUDGET]
    holding = budget.reservation()
    assert holding.grow(4 * len(BODY) + 1)  # as if other senders were reading bodies
    sender = await RawRequest.open(bounded_client, b"Expect: 100-continue\r\nContent-Length: %d\r\n" % len(BODY))

    status, headers, body = await sender.answer()

    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "too many body bytes waiting" in json.loads(body)["error"]
    sender.close()
    holding.release()
    assert budget.reserved == 0
    assert db.value("count_tickets") == 0


async def test_an_expectation_other_than_100_continue_gets_417_in_json(bounded_client, db):
    sender = await RawRequest.open(bounded_client, b"Expect: a-pony\r\nContent-Length: %d\r\n" % len(BODY))

    status, headers, body = await sender.answer()

    assert status == 417
    assert json.loads(body) == {"error": "unsupported Expect header 'a-pony'"}
    sender.close()
    assert db.value("count_tickets") == 0


@pytest.fixture
async def patient_client(aiohttp_client, settings, db):
    """The default body limit (1 MiB), and a read timeout far longer than any answer
    the tests wait for."""
    return await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False, read_timeout_seconds=20)))


async def test_a_declared_length_over_the_limit_gets_413_at_once_without_its_body(patient_client, db):
    """Without `Expect: 100-continue` as well: refused from its Content-Length, not after
    the read timeout, and nothing of it is read or reserved."""
    limit = patient_client.server.app[SETTINGS].max_body_bytes
    sender = await RawRequest.open(patient_client, b"Content-Length: %d\r\n" % (2 * limit))

    answer = await sender.answer_within(5)  # the read timeout is 20 s

    assert answer is not None, "no answer: the body was waited for instead of refused from its declared length"
    status, _, body = answer
    assert status == 413
    assert json.loads(body) == {"error": f"body of {2 * limit} bytes is over the limit of {limit} bytes"}
    assert patient_client.server.app[BODY_BUDGET].reserved == 0
    sender.close()
    assert db.value("count_tickets") == 0
