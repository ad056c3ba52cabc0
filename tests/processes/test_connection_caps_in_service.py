"""The connection caps of a real `myticket serve` (its own runner, not aiohttp's
run_app), set from the environment: one sender's extra connection is refused at accept,
another sender is served, and refusals are summarised in the log, not a line each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from ..service_process import Service
from ..waiting import wait_until


async def test_the_per_sender_connection_cap_set_in_the_environment_refuses_only_that_sender(
    database_url: str, tmp_path: Path
):
    service = Service(
        database_url, tmp_path / "data", MYTICKET_MAX_CONNECTIONS_PER_SENDER="2", LOG_LEVEL="INFO"
    )
    await service.start()
    held: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):
            _, writer = await asyncio.open_connection("127.0.0.1", service.port, local_addr=("127.0.0.3", 0))
            held.append(writer)
        answers = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", service.port, local_addr=("127.0.0.3", 0))
            answers.append(await asyncio.wait_for(reader.read(), timeout=30))
            writer.close()
        assert all(answer.startswith(b"HTTP/1.1 429 ") for answer in answers), answers[0][:200]

        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as session:
            # A body of its own: the shared test database keeps it, and another test's
            # reference ticket must not become a duplicate of it.
            body = b"Order: connection-caps\n\nproduct,product_id,price\nCap,CAP1,1.00\n"
            async with session.post(f"{service.base}/ticket", data=body) as polite:
                assert polite.status == 202

        async def summarised() -> bool:
            return "connection refused (sender_connections): " in service.log.read_text()

        await wait_until(summarised, timeout=15, what="the repeated refusals to be summarised in one line")
        log = service.log.read_text()
        assert log.count("connection from 127.0.0.3 refused at accept (sender_connections") == 1
    finally:
        for writer in held:
            writer.close()
        service.stop()
