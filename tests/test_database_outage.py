"""PostgreSQL down: tickets go to the spool (202), or, with no usable spool, get 503 and
nothing is acknowledged. Spooled tickets reach PostgreSQL once it answers again."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from myticket.app import init_app
from myticket.config import Settings
from myticket.embedded import EmbeddedPostgres
from myticket.metrics import Metrics
from myticket.repository import DATABASE_FAILURE_REASONS, DatabaseUnavailable, Repository
from myticket.typedefs import REPOSITORY
from myticket.worker import TicketWorker

from .conftest import CP1252_TICKET, REFERENCE_TICKET, Db, emptied_database, private_server
from .waiting import wait_until


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A server of this module's own, so stopping it does not disturb other tests."""
    yield from private_server(tmp_path_factory, "outage")


@pytest.fixture
def own_db(own_server: EmbeddedPostgres) -> Iterator[Db]:
    yield from emptied_database(own_server)


@pytest.fixture
def outage_settings(own_server: EmbeddedPostgres, own_db: Db, tmp_path: Path) -> Settings:
    return Settings(database_url=own_server.url, data_dir=tmp_path, run_worker=False)


async def status_of(client, path: str) -> int:
    return (await client.get(path)).status


async def restart_and_wait_ready(client, server: EmbeddedPostgres) -> None:
    server.start()

    async def ready() -> bool:
        response = await client.get("/ready")
        return response.status == 200 and (await response.json())["status"] == "ready"

    await wait_until(ready, timeout=30, what="/ready to report the database back")


async def test_without_a_spool_database_down_answers_503_and_stores_nothing(aiohttp_client, own_server, own_db, outage_settings):
    settings = dataclasses.replace(outage_settings, spool_max_bytes=0)
    client = await aiohttp_client(await init_app(settings))
    assert await status_of(client, "/ready") == 200

    own_server.stop(mode="immediate")
    try:
        response = await client.post("/ticket", data=REFERENCE_TICKET)
        assert response.status == 503
        assert int(response.headers["Retry-After"]) > 0
        assert "not stored" in (await response.json())["error"]

        ready = await client.get("/ready")
        assert ready.status == 503
        assert "database unavailable" in (await ready.json())["error"]
    finally:
        await restart_and_wait_ready(client, own_server)

    after = await client.post("/ticket", data=REFERENCE_TICKET)
    assert after.status == 202
    assert own_db.rows("stored_ids") == [((await after.json())["id"],)]


async def test_database_down_spools_then_replays_the_exact_bytes(aiohttp_client, own_server, own_db, outage_settings):
    client = await aiohttp_client(await init_app(outage_settings))

    own_server.stop(mode="immediate")
    try:
        answers = [await client.post("/ticket", data=body) for body in (REFERENCE_TICKET, CP1252_TICKET)]
        assert [answer.status for answer in answers] == [202, 202]
        ids = [(await answer.json())["id"] for answer in answers]

        ready = await client.get("/ready")
        assert ready.status == 200
        state = await ready.json()
        assert state["status"] == "spooling"
        assert state["spool"]["mode"] is True and state["spool"]["tickets"] == 2
    finally:
        await restart_and_wait_ready(client, own_server)

    async def replayed() -> bool:
        spool = (await (await client.get("/ready")).json())["spool"]
        return spool["tickets"] == 0 and spool["mode"] is False

    await wait_until(replayed, timeout=30, what="the spool to be replayed and spool mode to end")
    assert sorted(row[0] for row in own_db.rows("stored_ids")) == sorted(ids)
    for ticket_id, body in zip(ids, (REFERENCE_TICKET, CP1252_TICKET)):
        assert bytes(own_db.rows("ticket_delivery", {"id": ticket_id})[0][1]) == body
    metrics = await (await client.get("/metrics")).text()
    assert "myticket_tickets_spooled_total 2" in metrics
    assert "myticket_tickets_replayed_total 2" in metrics


async def test_ready_while_spooling_reports_spool_mode_and_a_short_one_line_reason(aiohttp_client, own_server, own_db, outage_settings):
    client = await aiohttp_client(await init_app(outage_settings))
    port = urlsplit(own_server.url).port

    own_server.stop(mode="immediate")
    try:
        # No ticket arrived since the database went down: the next one would be spooled.
        # A pooled connection may fail with another short reason; a new one is refused.
        for _ in range(2):
            ready = await client.get("/ready")
            assert ready.status == 200
            state = await ready.json()
            assert state["status"] == "spooling"
            assert state["spool"]["mode"] is True
            reason = state["database"].removeprefix("unavailable: ")
            assert reason in DATABASE_FAILURE_REASONS, state["database"]
            answer = await ready.text()
            assert not any(part in answer for part in ("\\n", "\\t", "127.0.0.1", str(port))), answer
        assert state["database"] == "unavailable: connection refused"
        # The error itself, as logged, is one line with the driver's detail.
        with pytest.raises(DatabaseUnavailable) as raised:
            await client.server.app[REPOSITORY].applied_migrations()
        assert raised.value.reason == "connection refused"
        assert "\n" not in str(raised.value) and "\t" not in str(raised.value)
        assert str(raised.value).startswith("applied_migrations: Connection refused Is the server running")
    finally:
        await restart_and_wait_ready(client, own_server)


async def test_worker_logs_an_outage_once_when_it_begins_and_once_when_it_ends(own_server, own_db, caplog):
    caplog.set_level(logging.DEBUG, logger="myticket.worker")
    repository = await Repository.connect(own_server.url)
    # Two loops on one repository, as in a process; a short poll makes many retries.
    workers = [TicketWorker(repository, Metrics(), idle_poll_seconds=0.05) for _ in range(2)]
    stop = asyncio.Event()
    loops = [asyncio.create_task(worker.run(stop)) for worker in workers]

    def worker_messages(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "myticket.worker" and r.levelno >= level]

    async def retried_ten_times() -> bool:
        return sum("database unavailable" in message for message in worker_messages(logging.DEBUG)) >= 10

    async def both_loops_resumed() -> bool:
        resumed = any("answers again" in message for message in worker_messages(logging.WARNING))
        return resumed and all(worker.idle.is_set() for worker in workers)

    try:
        await asyncio.wait_for(asyncio.gather(*(worker.idle.wait() for worker in workers)), timeout=15)
        own_server.stop(mode="immediate")
        await wait_until(retried_ten_times, timeout=30, what="the worker loops to retry ten times")
        own_server.start()
        await wait_until(both_loops_resumed, timeout=30, what="both worker loops to resume")
    finally:
        stop.set()
        await asyncio.gather(*loops)
        await repository.close()
        if not own_server.is_running():
            own_server.start()

    warnings = worker_messages(logging.WARNING)
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("worker paused, database unavailable: ")
    assert warnings[1].startswith("database answers again after ")
    assert all("\n" not in message for message in warnings)


@pytest.mark.parametrize("problem", ["not-writable", "full"])
async def test_unusable_spool_and_database_down_answer_503_only(aiohttp_client, own_server, own_db, outage_settings, tmp_path, problem):
    if problem == "not-writable":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        settings = dataclasses.replace(outage_settings, spool_dir=blocker / "spool")
    else:
        settings = dataclasses.replace(outage_settings, spool_max_bytes=1)
    client = await aiohttp_client(await init_app(settings))

    own_server.stop(mode="immediate")
    try:
        answers = [await client.post("/ticket", data=REFERENCE_TICKET) for _ in range(3)]
        assert [answer.status for answer in answers] == [503, 503, 503]
        assert all(int(answer.headers["Retry-After"]) > 0 for answer in answers)
        assert (await client.get("/ready")).status == 503
    finally:
        await restart_and_wait_ready(client, own_server)

    assert own_db.value("count_tickets") == 0
