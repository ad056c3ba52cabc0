"""Starting while PostgreSQL is down, and a spool of another database, on real
processes (`python -m myticket serve` against a PostgreSQL this module stops and starts)."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import datetime, timezone

import aiohttp

from myticket.config import mask_password
from myticket.db.migrate import migration_ids, prepare_database
from myticket.intake.spool import Spool

from ..database import Db, create_empty_database
from ..helpers import ticket_with
from ..load import make_tickets, send_tickets
from ..paths import PROJECT_ROOT
from ..service_process import Service
from ..waiting import wait_until


async def test_serve_starts_while_postgres_is_down_spools_then_migrates_and_replays(own_server, own_db, tmp_path):
    fresh_url = create_empty_database(own_server.url, "fresh_start")  # no migration applied yet
    service = Service(fresh_url, tmp_path / "data")
    await asyncio.to_thread(own_server.stop, "immediate")
    try:
        await service.start()
        state = await service.ready_state()
        assert state is not None and state["status"] == "spooling" and state["spool"]["mode"] is True
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{service.base}/ping") as ping:
                assert (ping.status, await ping.text()) == (200, "pong")
        bodies = make_tickets(40, seed=201)
        sent = await send_tickets("127.0.0.1", service.port, bodies, concurrency=8, deadline_seconds=60)
        assert dict(sent.statuses) == {202: 40}
        state = await service.ready_state()
        assert state["status"] == "spooling" and state["spool"]["tickets"] == 40
    finally:
        await asyncio.to_thread(own_server.start)

    try:
        await wait_until(service.spool_drained, timeout=60, what="migrations and the replay once PostgreSQL answers")
        fresh = Db(fresh_url)
        assert [row[0] for row in fresh.rows("applied_migration_ids")] == sorted(migration_ids())
        assert sorted(row[0] for row in fresh.rows("stored_ids")) == sorted(sent.acked.values())
        for index, ticket_id in sent.acked.items():
            assert bytes(fresh.rows("ticket_delivery", {"id": ticket_id})[0][1]) == bodies[index]

        async def all_processed() -> bool:  # the worker started once the schema was there
            return dict(fresh.rows("status_counts")).get("pending", 0) == 0

        await wait_until(all_processed, timeout=60, what="the worker to process the replayed tickets")
        fresh.close()
        # The worker process was started once the schema was there, not left to die and restart.
        assert "worker process" not in service.log.read_text()
    finally:
        service.stop()


async def test_without_a_spool_serve_still_stops_at_once_with_one_line_when_postgres_is_down(own_server, own_db, tmp_path):
    service = Service(own_server.url, tmp_path / "data", MYTICKET_SPOOL_MAX_BYTES="0")
    await asyncio.to_thread(own_server.stop, "immediate")
    try:
        result = await asyncio.to_thread(service.run, "serve", timeout=60, LOG_LEVEL="ERROR")
    finally:
        await asyncio.to_thread(own_server.start)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("myticket: database unavailable: "), result.stderr


async def test_a_service_meeting_a_spool_of_another_database_refuses_to_start_with_one_line(own_server, own_db, tmp_path):
    other_url = create_empty_database(own_server.url, "the_other_service")
    data_dir = tmp_path / "shared-data"
    theirs = Spool(data_dir / "spool", max_bytes=10_000_000, database_url=mask_password(other_url))
    assert await theirs.claim(prepare_database(other_url)) is None
    await theirs.write([ticket_with("9", "P9", "Thé", "1.00", received_at=datetime.now(timezone.utc))])
    await theirs.close()

    service = Service(own_server.url, data_dir)
    serve = subprocess.Popen(
        service.command("serve"), cwd=PROJECT_ROOT, env={**service.env, "LOG_LEVEL": "ERROR"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        async def exited_or_serving() -> bool:
            return serve.poll() is not None or await service.ready_state() is not None

        await wait_until(exited_or_serving, timeout=60, what="serve to exit or to answer")
        assert serve.poll() == 1, "serve started beside a spool of another database"
    finally:
        if serve.poll() is None:
            serve.kill()
        stderr = serve.communicate()[1]

    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "holds 1 tickets for database 'the_other_service'" in lines[0]
    assert "refusing to start" in lines[0] and "MYTICKET_SPOOL_DIR" in lines[0]
    assert own_db.value("count_tickets") == 0
