"""Issue 18: no sender can take the service from the others. Each sender has its own
source address on this machine (any address of 127.0.0.0/8 can be bound): 127.0.0.2 is
the polite sender, 127.0.0.3 (and 127.0.0.4) the attackers. The app is served as
`myticket serve` serves it: through the connection gate, with the same server options."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import BaseRunner

from myticket.web import tickets
from myticket.web.app import init_app
from myticket.web.connections import ConnectionLimits, GatedAppRunner
from myticket.web.server import HTTP_SERVER_OPTIONS, MAX_HEADERS
from myticket.web.typedefs import BODY_BUDGET, INGEST, REPOSITORY

from ..paths import REFERENCE_TICKET
from ..helpers import gate_database_writes, sample
from ..waiting import wait_until

POLITE = "127.0.0.2"
ATTACKER = "127.0.0.3"
SECOND_ATTACKER = "127.0.0.4"


class GatedTestServer(TestServer):
    """The app behind the service's own runner: connection caps at accept, and no
    cancellation of a handler whose sender leaves (as under `myticket serve`)."""

    def __init__(self, app, limits: ConnectionLimits) -> None:
        super().__init__(app)
        self.limits = limits

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return GatedAppRunner(self.app, limits=self.limits, **{**kwargs, "handler_cancellation": False})


async def served(aiohttp_client, settings, *, limits: ConnectionLimits | None = None, **changes):
    server = GatedTestServer(
        await init_app(dataclasses.replace(settings, run_worker=False, **changes)),
        limits or ConnectionLimits(total=10_000, per_sender=256),
    )
    await server.start_server(**HTTP_SERVER_OPTIONS)
    return await aiohttp_client(server)


class RawConnection:
    """One connection from a chosen source address, driven byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, client, source: str, data: bytes = b"") -> RawConnection:
        reader, writer = await asyncio.open_connection(
            client.server.host, client.server.port, local_addr=(source, 0)
        )
        if data:
            writer.write(data)
            await writer.drain()
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout=timeout)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = await asyncio.wait_for(self.reader.readexactly(int(headers.get("Content-Length", "0"))), timeout)
        return int(lines[0].split()[1]), headers, body

    def close(self) -> None:
        self.writer.close()


def post_head(length: int, extra: bytes = b"") -> bytes:
    return b"POST /ticket HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" % (length, extra)


@contextlib.asynccontextmanager
async def session_from(source: str):
    """An aiohttp client whose connections leave from `source`."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def polite_statuses(client, count: int) -> list[int]:
    async with session_from(POLITE) as session:
        statuses = []
        for _ in range(count):
            async with session.post(client.make_url("/ticket"), data=REFERENCE_TICKET) as response:
                statuses.append(response.status)
        return statuses


async def refusals(client, reason: str) -> float | None:
    text = await (await client.get("/metrics")).text()
    return sample(text, "myticket_tickets_refused_total", {"reason": reason})


async def test_a_polite_sender_is_served_while_300_connections_declare_1_mib_and_send_nothing(
    aiohttp_client, settings, db
):
    # The default budget (256 MiB) and body limit (1 MiB): 300 declared bodies are more
    # than the whole budget, which a reservation from Content-Length would exhaust.
    client = await served(aiohttp_client, settings, limits=ConnectionLimits(total=10_000, per_sender=400))
    runner_server = client.server.runner.server
    attackers = [await RawConnection.open(client, ATTACKER, post_head(1024 * 1024)) for _ in range(300)]
    try:
        async def heads_parsed() -> bool:
            return runner_server.requests_count >= 300

        await wait_until(heads_parsed, timeout=30, what="the 300 request heads to reach their handler")
        assert client.server.app[BODY_BUDGET].reserved == 0

        assert await polite_statuses(client, 20) == [202] * 20
    finally:
        for attacker in attackers:
            attacker.close()
    assert db.value("count_tickets") == 20


async def test_a_connection_that_sends_no_body_byte_gets_408_after_the_grace(aiohttp_client, settings, db, monkeypatch):
    monkeypatch.setattr(tickets, "BODY_GRACE_SECONDS", 0.2)
    client = await served(aiohttp_client, settings, min_body_bytes_per_second=1000, read_timeout_seconds=60)
    silent = await RawConnection.open(client, ATTACKER, post_head(10_000) + b"x" * 10)

    status, _, body = await silent.answer()

    assert status == 408
    assert "slower than 1000 bytes per second" in json.loads(body)["error"]
    assert await refusals(client, "body_too_slow") == 1
    assert client.server.app[BODY_BUDGET].reserved == 0
    silent.close()


async def test_a_greedy_sender_past_its_share_of_body_bytes_gets_429_and_the_polite_one_does_not(
    aiohttp_client, settings, db
):
    # 40,000 bytes in memory, 25 % each: 10,000 bytes per sender.
    client = await served(
        aiohttp_client, settings, max_body_bytes=10_000, max_pending_bytes=40_000, sender_share_percent=25
    )
    budget = client.server.app[BODY_BUDGET]
    holding = await RawConnection.open(client, ATTACKER, post_head(10_000) + b"x" * 6000)

    async def reserved() -> bool:
        return budget.reserved == 6000

    await wait_until(reserved, timeout=10, what="the greedy sender's first bytes to be reserved")
    over = await RawConnection.open(client, ATTACKER, post_head(10_000) + b"x" * 6000)
    status, headers, body = await over.answer()
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert "share of the body bytes" in json.loads(body)["error"]

    assert await polite_statuses(client, 3) == [202] * 3
    assert await refusals(client, "sender_share") == 1
    for connection in (holding, over):
        connection.close()


async def test_a_greedy_sender_past_its_share_of_waiting_tickets_gets_429_and_the_polite_one_does_not(
    aiohttp_client, settings, db
):
    # 8 waiting tickets, 25 % each: 2 per sender, while the database is held.
    client = await served(aiohttp_client, settings, max_waiting_tickets=8, sender_share_percent=25)
    gate = gate_database_writes(client.server.app[REPOSITORY])
    ingest = client.server.app[INGEST]
    async with session_from(ATTACKER) as greedy, session_from(POLITE) as polite:
        url = client.make_url("/ticket")
        admitted = [asyncio.create_task(greedy.post(url, data=REFERENCE_TICKET)) for _ in range(2)]

        async def two_waiting() -> bool:
            return ingest.waiting_for(ATTACKER) == 2

        await wait_until(two_waiting, timeout=10, what="the greedy sender's two tickets to wait")
        async with greedy.post(url, data=REFERENCE_TICKET) as refused:
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "1"
        polite_post = asyncio.create_task(polite.post(url, data=REFERENCE_TICKET))

        async def polite_waiting() -> bool:
            return ingest.waiting_for(POLITE) == 1

        await wait_until(polite_waiting, timeout=10, what="the polite ticket to be admitted")
        gate.set()
        responses = [await task for task in (*admitted, polite_post)]
        assert [response.status for response in responses] == [202, 202, 202]
        for response in responses:
            response.release()
    assert db.value("count_tickets") == 3
    assert await refusals(client, "sender_share") == 1


async def test_the_connection_caps_refuse_one_senders_extra_connections_and_not_anothers(aiohttp_client, settings, db):
    client = await served(aiohttp_client, settings, limits=ConnectionLimits(total=8, per_sender=3))
    held = [await RawConnection.open(client, ATTACKER) for _ in range(3)]
    refused = await RawConnection.open(client, ATTACKER)
    status, headers, body = await refused.answer()
    assert status == 429 and headers["Retry-After"] == "1"
    assert "MYTICKET_MAX_CONNECTIONS_PER_SENDER" in json.loads(body)["error"]
    assert await refused.reader.read() == b""  # and closed
    refused.close()

    assert await polite_statuses(client, 2) == [202, 202]

    # The process's cap: a second attacker holds three more, the polite sender one, the
    # metrics reader (127.0.0.1) the eighth and last; then everyone is refused.
    held += [await RawConnection.open(client, SECOND_ATTACKER) for _ in range(3)]
    gate = client.server.runner.server.gate

    async def six_open() -> bool:
        return gate.open == 6

    await wait_until(six_open, timeout=10, what="six connections held (the polite ones closed)")
    full = await RawConnection.open(client, POLITE)
    assert await refusals(client, "sender_connections") == 1
    assert gate.open == 8
    overflow = await RawConnection.open(client, POLITE)
    status, _, body = await overflow.answer()
    assert status == 503
    assert "MYTICKET_MAX_CONNECTIONS" in json.loads(body)["error"]
    assert await refusals(client, "connections") == 1
    for connection in (*held, full, overflow):
        connection.close()

    async def all_but_the_metrics_reader_closed() -> bool:
        return gate.open == 1

    await wait_until(all_but_the_metrics_reader_closed, timeout=10, what="the connections to be counted closed")
    assert await polite_statuses(client, 1) == [202]


@pytest.mark.parametrize(
    "extra",
    [
        b"".join(b"X-Filler-%d: x\r\n" % number for number in range(MAX_HEADERS + 1)),
        b"X-Long: " + b"x" * 9000 + b"\r\n",
    ],
    ids=["too many headers", "a header too long"],
)
async def test_an_oversized_request_head_is_refused(aiohttp_client, settings, db, extra):
    client = await served(aiohttp_client, settings)
    sender = await RawConnection.open(client, ATTACKER, post_head(len(REFERENCE_TICKET), extra) + REFERENCE_TICKET)

    status, _, _ = await sender.answer()

    assert status == 400
    sender.close()
    within = b"".join(b"X-Filler-%d: %s\r\n" % (number, b"x" * 4000) for number in range(MAX_HEADERS - 4))
    accepted = await RawConnection.open(client, POLITE, post_head(len(REFERENCE_TICKET), within) + REFERENCE_TICKET)
    assert (await accepted.answer())[0] == 202
    accepted.close()
    assert db.value("count_tickets") == 1


async def test_behind_a_trusted_proxy_the_sender_is_the_forwarded_address_and_never_from_others(
    aiohttp_client, settings, db
):
    from myticket.core.senders import parse_networks

    # 127.0.0.1 (the test client) is the trusted proxy; 127.0.0.3 is not.
    client = await served(
        aiohttp_client, settings, max_waiting_tickets=4, sender_share_percent=25,
        trusted_proxies=parse_networks(["127.0.0.1"]),
    )
    gate = gate_database_writes(client.server.app[REPOSITORY])
    ingest = client.server.app[INGEST]
    first = asyncio.create_task(client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Forwarded-For": "192.0.2.1"}))

    async def waiting_for_the_forwarded_sender() -> bool:
        return ingest.waiting_for("192.0.2.1") == 1

    await wait_until(waiting_for_the_forwarded_sender, timeout=10, what="the first proxied ticket to wait")
    again = await client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Forwarded-For": "10.9.9.9, 192.0.2.1"})
    assert again.status == 429  # the same sender: the last hop, not what its client wrote
    other = asyncio.create_task(client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Forwarded-For": "192.0.2.2"}))

    async def waiting_for_the_other() -> bool:
        return ingest.waiting_for("192.0.2.2") == 1

    await wait_until(waiting_for_the_other, timeout=10, what="another proxied sender's ticket to wait")
    # From an untrusted peer the header is ignored: the sender is the peer address.
    async with session_from(ATTACKER) as untrusted:
        forged = asyncio.create_task(
            untrusted.post(client.make_url("/ticket"), data=REFERENCE_TICKET, headers={"X-Forwarded-For": "192.0.2.1"})
        )

        async def waiting_for_the_peer() -> bool:
            return ingest.waiting_for(ATTACKER) == 1

        await wait_until(waiting_for_the_peer, timeout=10, what="the forged header to be ignored")
        gate.set()
        assert (await forged).status == 202
    assert [(await first).status, (await other).status] == [202, 202]
    assert db.value("count_tickets") == 3
