"""/ready agrees with POST /ticket in every state: a database that answers reads but
refuses writes, a full spool disk, both, a problem that clears without any POST to
clear it, and a stopped server (short documented reasons only). The full disk is a
real one: a small tmpfs mounted as root."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from myticket.config import Settings
from myticket.core.database_errors import DATABASE_FAILURE_REASONS
from myticket.db.embedded import EmbeddedPostgres
from myticket.web.app import init_app

from ..database import Db
from ..paths import REFERENCE_TICKET
from ..waiting import wait_until
from .test_database_outage import fill, small_disk  # noqa: F401  (small_disk: a fixture)


@pytest.fixture
def settings(own_server: EmbeddedPostgres, own_db: Db, tmp_path: Path, small_disk: Path) -> Settings:
    return Settings(database_url=own_server.url, data_dir=tmp_path, run_worker=False, spool_dir=small_disk)


async def ready(client) -> tuple[int, dict]:
    response = await client.get("/ready")
    return response.status, await response.json()


async def post_status(client) -> int:
    return (await client.post("/ticket", data=REFERENCE_TICKET)).status


@pytest.fixture
def writes_refused(own_db: Db) -> Iterator[callable]:
    """Makes the server read-only when called; always writable again afterwards."""
    def refuse() -> None:
        own_db.rows("make_read_only")
        own_db.rows("reload_configuration")

    yield refuse
    own_db.rows("make_writable")
    own_db.rows("reload_configuration")


async def test_a_database_refusing_writes_with_a_full_spool_disk_is_503_on_ready_as_on_post(
    aiohttp_client, settings, small_disk, writes_refused
):
    client = await aiohttp_client(await init_app(settings))
    assert await post_status(client) == 202
    assert (await ready(client))[0] == 200
    filler = fill(small_disk)
    writes_refused()

    async def posts_refused() -> bool:
        return await post_status(client) == 503

    await wait_until(posts_refused, timeout=15, what="POST to be refused (read-only database, full spool disk)")
    # PostgreSQL still answers /ready's reads: /ready must not say ready (nor spooling).
    status, body = await ready(client)
    assert status == 503, body
    assert "read-only" in body["error"] and "spool" in body["error"], body
    assert await post_status(client) == 503

    # Space comes back: /ready says so at once, without waiting for a write, and POST agrees.
    filler.unlink()
    status, body = await ready(client)
    assert (status, body["status"], body["database"]) == (200, "spooling", "unavailable: read-only"), body
    assert await post_status(client) == 202


async def test_a_full_spool_disk_with_postgres_stopped_leaves_ready_as_soon_as_space_is_back(
    aiohttp_client, settings, own_server, small_disk
):
    client = await aiohttp_client(await init_app(settings))
    filler = fill(small_disk)
    own_server.stop()
    try:
        assert await post_status(client) == 503
        status, body = await ready(client)
        assert status == 503 and "spool" in body["error"], body
        filler.unlink()
        status, body = await ready(client)
        assert (status, body["status"]) == (200, "spooling"), body
        assert body["spool"]["problem"] is None
        assert await post_status(client) == 202
    finally:
        own_server.start()


async def test_after_pg_ctl_stop_ready_gives_only_documented_short_reasons(aiohttp_client, settings, own_server):
    settings = dataclasses.replace(settings, spool_max_bytes=0)  # no spool: /ready is 503 with the reason
    client = await aiohttp_client(await init_app(settings))
    # Several pooled connections, each of which meets the stop in its own way.
    for _ in range(3):
        assert (await ready(client))[0] == 200
    own_server.stop()  # pg_ctl stop -m fast: sessions are terminated, sockets closed
    try:
        reasons = []
        for _ in range(6):
            status, body = await ready(client)
            assert status == 503
            assert await post_status(client) == 503
            reasons.append(body["error"].removeprefix("database unavailable: "))
        assert set(reasons) <= DATABASE_FAILURE_REASONS, reasons
        assert reasons[-1] == "connection refused"
    finally:
        own_server.start()
