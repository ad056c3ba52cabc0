"""PostgreSQL down: tickets go to the spool (202), or, with no usable spool, get 503 and
nothing is acknowledged. Spooled tickets reach PostgreSQL once it answers again."""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from myticket.web.app import init_app
from myticket.config import Settings, mask_password
from myticket.db.embedded import EmbeddedPostgres
from myticket.telemetry.metrics import Metrics
from myticket.db.migrate import prepare_database
from myticket.core.database_errors import DATABASE_FAILURE_REASONS, DatabaseUnavailable
from myticket.db.repository import Repository
from myticket.intake.spool import Spool
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..database import Db, create_empty_database
from ..helpers import ticket_with
from ..paths import CP1252_TICKET, REFERENCE_TICKET
from ..waiting import wait_until


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
    caplog.set_level(logging.DEBUG, logger="myticket.worker.loop")
    repository = await Repository.connect(own_server.url)
    # Two loops on one repository, as in a process; a short poll makes many retries.
    workers = [TicketWorker(repository, Metrics(), idle_poll_seconds=0.05) for _ in range(2)]
    stop = asyncio.Event()
    loops = [asyncio.create_task(worker.run(stop)) for worker in workers]

    def worker_messages(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "myticket.worker.loop" and r.levelno >= level]

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


# --- the spool never strands what it acknowledged (issue 10) -----------------------

async def ready_state(client) -> tuple[int, dict]:
    response = await client.get("/ready")
    return response.status, await response.json()


async def metric_value(client, line_start: str) -> float:
    text = await (await client.get("/metrics")).text()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start)]
    return values[0] if values else -1.0


async def spool_drained_and_left(client) -> bool:
    status, state = await ready_state(client)
    return status == 200 and state["status"] == "ready" and state["spool"]["tickets"] == 0 and not state["spool"]["mode"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB file system of its own (tmpfs, mounted as root), to fill up for real."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)], check=True)
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill(directory: Path) -> Path:
    """Write a file until the file system is full; return it (delete it to free the space)."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


async def test_a_full_disk_during_replay_neither_kills_the_replayer_nor_refuses_tickets(
    aiohttp_client, own_server, own_db, outage_settings, small_disk, caplog
):
    settings = dataclasses.replace(outage_settings, spool_dir=small_disk)
    client = await aiohttp_client(await init_app(settings))
    own_server.stop(mode="immediate")
    try:
        answers = [await client.post("/ticket", data=CP1252_TICKET + bytes([n])) for n in range(20)]
        assert [answer.status for answer in answers] == [202] * 20
        spooled = [(await answer.json())["id"] for answer in answers]
        filler = fill(small_disk)
    finally:
        own_server.start()

    # The replayer stores the tickets in PostgreSQL, then cannot delete them from the full spool.
    async def all_replayed_into_postgres() -> bool:
        return own_db.value("count_tickets") == 20

    await wait_until(all_replayed_into_postgres, timeout=30, what="the spooled tickets to reach PostgreSQL")

    async def delete_failed() -> bool:
        return await metric_value(client, 'myticket_spool_replay_failures_total{cause="spool_unavailable"}') >= 1

    await wait_until(delete_failed, timeout=10, what="the replayer to count the failed delete")
    # PostgreSQL answers: a ticket the full spool cannot take is stored there, and /ready agrees.
    during = await client.post("/ticket", data=REFERENCE_TICKET)
    assert during.status == 202
    status, state = await ready_state(client)
    assert (status, state["status"]) == (200, "ready")
    assert any("could not delete them from the spool" in record.getMessage() for record in caplog.records)

    filler.unlink()  # the space comes back: the replayer, still alive, finishes the job
    await wait_until(lambda: spool_drained_and_left(client), timeout=60, what="the spool to drain once space is back")
    stored = sorted(row[0] for row in own_db.rows("stored_ids"))
    assert stored == sorted([*spooled, (await during.json())["id"]])
    assert bytes(own_db.rows("ticket_delivery", {"id": spooled[7]})[0][1]) == CP1252_TICKET + bytes([7])


async def test_an_unreadable_spool_is_moved_aside_and_a_database_blip_is_spooled_in_a_fresh_one(
    aiohttp_client, own_server, own_db, outage_settings
):
    garbage = b"not a database, whatever wrote this" * 200
    outage_settings.spool_path.mkdir(parents=True)
    (outage_settings.spool_path / "spool.sqlite3").write_bytes(garbage)
    client = await aiohttp_client(await init_app(outage_settings))

    own_server.stop(mode="immediate")
    try:
        answer = await client.post("/ticket", data=REFERENCE_TICKET)
        assert answer.status == 202
        status, state = await ready_state(client)
        assert (status, state["status"], state["spool"]["tickets"]) == (200, "spooling", 1)
        [moved_aside] = state["spool"]["quarantined"]
        assert (outage_settings.spool_path / moved_aside).read_bytes() == garbage
    finally:
        own_server.start()

    await wait_until(lambda: spool_drained_and_left(client), timeout=30, what="the fresh spool to be replayed")
    assert bytes(own_db.rows("ticket_delivery", {"id": (await answer.json())["id"]})[0][1]) == REFERENCE_TICKET

    async def reported_in_metrics() -> bool:
        return await metric_value(client, "myticket_spool_quarantined_files") == 1

    await wait_until(reported_in_metrics, timeout=10, what="the quarantined file in /metrics")


async def test_a_spool_of_another_database_is_not_replayed_into_this_one_when_the_service_started_without_it(
    aiohttp_client, own_server, own_db, outage_settings
):
    other_url = create_empty_database(own_server.url, "another_service")
    other_identity = prepare_database(other_url)
    theirs = Spool(outage_settings.spool_path, max_bytes=10_000_000, database_url=mask_password(other_url))
    assert await theirs.claim(other_identity) is None
    their_tickets = [ticket_with("1", "P1", "Thé", "2.00", received_at=datetime.now(timezone.utc)) for _ in range(2)]
    await theirs.write(their_tickets)
    await theirs.close()

    own_server.stop(mode="immediate")
    try:
        client = await aiohttp_client(await init_app(outage_settings))  # starts, unconfirmed
        refused = await client.post("/ticket", data=REFERENCE_TICKET)
        assert refused.status == 503  # the spool holds another URL's tickets: not mixed with them
        status, _ = await ready_state(client)
        assert status == 503
    finally:
        own_server.start()

    async def ready() -> bool:
        status, state = await ready_state(client)
        return status == 200 and state["status"] == "ready"

    await wait_until(ready, timeout=30, what="/ready once PostgreSQL answers")
    status, state = await ready_state(client)
    assert state["spool"]["tickets"] == 2 and state["spool"]["mode"] is False
    assert "holds 2 tickets for database 'another_service'" in state["spool"]["problem"]
    assert own_db.value("count_tickets") == 0
    direct = await client.post("/ticket", data=REFERENCE_TICKET)
    assert direct.status == 202
    assert own_db.rows("stored_ids") == [((await direct.json())["id"],)]


async def test_a_spool_of_1_mib_tickets_is_replayed_in_batches_bounded_in_bytes(
    aiohttp_client, own_server, own_db, outage_settings
):
    mib = 1024 * 1024
    settings = dataclasses.replace(outage_settings, batch_max_bytes=3 * mib, max_body_bytes=2 * mib)
    client = await aiohttp_client(await init_app(settings))
    repository = client.server.app[REPOSITORY]
    replayed_batches: list[int] = []
    store_tickets = repository.store_tickets

    async def observed(*, tickets):
        replayed_batches.append(sum(len(ticket.body) for ticket in tickets))
        return await store_tickets(tickets=tickets)

    bodies = [ticket_with(f"big-{n}", f"B{n}", "x" * (mib - 200), "1.00", received_at=datetime.now(timezone.utc)).body
              for n in range(12)]
    own_server.stop(mode="immediate")
    try:
        answers = [await client.post("/ticket", data=body) for body in bodies]
        assert [answer.status for answer in answers] == [202] * 12
        repository.store_tickets = observed  # watch the replay's INSERTs from here on
    finally:
        await restart_and_wait_ready(client, own_server)

    async def replayed() -> bool:
        return (await (await client.get("/ready")).json())["spool"]["tickets"] == 0

    await wait_until(replayed, timeout=60, what="the spool of 1 MiB tickets to be replayed")
    assert len(own_db.rows("stored_ids")) == 12
    assert replayed_batches and max(replayed_batches) <= 3 * mib


async def test_a_full_disk_does_not_strand_spooled_tickets_behind_a_delete_that_fails(
    aiohttp_client, own_server, own_db, outage_settings, small_disk
):
    # Small replay batches (bounded in bytes), so that the replay needs many batches and
    # each batch's delete fails on the full disk.
    settings = dataclasses.replace(outage_settings, spool_dir=small_disk, batch_max_bytes=2048)
    client = await aiohttp_client(await init_app(settings))
    own_server.stop(mode="immediate")
    try:
        answers = [await client.post("/ticket", data=CP1252_TICKET * 8 + b"%d" % n) for n in range(30)]
        assert [answer.status for answer in answers] == [202] * 30
        spooled = sorted([(await answer.json())["id"] for answer in answers])
        filler = fill(small_disk)
    finally:
        own_server.start()

    async def every_ticket_in_postgres_and_the_spool_left() -> bool:
        status, state = await ready_state(client)
        return (own_db.value("count_tickets") == 30 and status == 200 and state["status"] == "ready"
                and state["spool"]["tickets"] == 0 and not state["spool"]["mode"])

    # With the disk still full: past the deletes that fail, every ticket reaches PostgreSQL.
    await wait_until(every_ticket_in_postgres_and_the_spool_left, timeout=60,
                     what="all 30 spooled tickets in PostgreSQL while the spool's disk is full")
    assert sorted(row[0] for row in own_db.rows("stored_ids")) == spooled
    filler.unlink()


async def test_ready_never_says_spooling_when_the_spool_s_disk_is_full(
    aiohttp_client, own_server, own_db, outage_settings, small_disk
):
    settings = dataclasses.replace(outage_settings, spool_dir=small_disk)
    await aiohttp_client(await init_app(settings))  # an earlier run: the spool file exists
    filler = fill(small_disk)
    client = await aiohttp_client(await init_app(settings))  # a fresh start, no write tried yet
    own_server.stop(mode="immediate")
    try:
        status, state = await ready_state(client)
        answer = await client.post("/ticket", data=REFERENCE_TICKET)
        assert (status, answer.status) == (503, 503), state
        assert "spool disk nearly full" in state["error"]
    finally:
        own_server.start()
        filler.unlink()
