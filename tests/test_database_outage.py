"""With PostgreSQL down, nothing is acknowledged: 503 + Retry-After, and no row appears later."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from myticket.app import init_app
from myticket.config import Settings
from myticket.embedded import EmbeddedPostgres
from myticket.migrate import apply_migrations

from .conftest import REFERENCE_TICKET, Db
from .waiting import wait_until


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A server of this module's own, so stopping it does not disturb other tests."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("outage") / "pgdata")
    apply_migrations(server.start())
    yield server
    server.stop()


async def test_database_down_answers_503_and_stores_nothing(aiohttp_client, own_server, tmp_path: Path):
    client = await aiohttp_client(await init_app(Settings(database_url=own_server.url, data_dir=tmp_path)))
    assert (await client.get("/ready")).status == 200

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
        own_server.start()

    async def is_ready() -> bool:
        return (await client.get("/ready")).status == 200

    await wait_until(is_ready, timeout=30, what="/ready to answer 200 after PostgreSQL restarted")
    after = await client.post("/ticket", data=REFERENCE_TICKET)
    assert after.status == 202
    accepted_id = (await after.json())["id"]

    db = Db(own_server.url)
    try:
        assert db.rows("stored_ids") == [(accepted_id,)]
    finally:
        db.close()
