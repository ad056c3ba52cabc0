"""POST /ticket stores the exact bytes before answering, and refuses clearly otherwise."""

from __future__ import annotations

import dataclasses
import logging
import uuid

import pytest

from myticket.web.app import init_app
from myticket.web.typedefs import EXPECTED_MIGRATIONS, INGEST

from ..paths import CP1252_TICKET, REFERENCE_TICKET

NUL_TICKET = b"Order: 78\x00\nTotal: 1\n\nproduct,product_id,price\nX\x00Y,id\x00,1\n"


@pytest.mark.parametrize(
    "body",
    [REFERENCE_TICKET, CP1252_TICKET, NUL_TICKET, b"\xff\xfe not utf-8 at all \x80"],
    ids=["reference", "cp1252", "nul-bytes", "invalid-utf8"],
)
async def test_post_stores_exact_bytes_and_answers_its_id(client, db, body):
    response = await client.post("/ticket", data=body, headers={"Content-Type": "text/html"})

    assert response.status == 202
    answer = await response.json()
    ticket_id = str(uuid.UUID(answer["id"]))
    row = db.rows("ticket_delivery", {"id": ticket_id})
    assert len(row) == 1
    stored_id, stored_body, content_type, status = row[0]
    assert stored_id == ticket_id
    assert bytes(stored_body) == body
    assert content_type == "text/html"


async def test_each_post_gets_its_own_id(client, db):
    ids = set()
    for _ in range(3):
        response = await client.post("/ticket", data=REFERENCE_TICKET)
        assert response.status == 202
        ids.add((await response.json())["id"])
    assert len(ids) == 3
    assert db.value("count_tickets") == 3


async def test_empty_body_is_refused_with_400_and_nothing_stored(client, db):
    response = await client.post("/ticket", data=b"")

    assert response.status == 400
    assert "empty body" in (await response.json())["error"]
    assert db.value("count_tickets") == 0


@pytest.fixture
async def small_limit_client(aiohttp_client, settings, db):
    return await aiohttp_client(await init_app(dataclasses.replace(settings, max_body_bytes=1000)))


async def test_body_over_the_limit_is_refused_with_413_and_nothing_stored(small_limit_client, db):
    response = await small_limit_client.post("/ticket", data=b"x" * 1001)

    assert response.status == 413
    assert "over the limit of 1000 bytes" in (await response.json())["error"]
    assert db.value("count_tickets") == 0


async def test_chunked_body_over_the_limit_is_refused_with_413(small_limit_client, db):
    async def chunks():
        for _ in range(20):
            yield b"y" * 100

    response = await small_limit_client.post("/ticket", data=chunks())

    assert response.status == 413
    assert db.value("count_tickets") == 0


async def test_body_at_the_limit_is_accepted(small_limit_client, db):
    response = await small_limit_client.post("/ticket", data=b"z" * 1000)

    assert response.status == 202
    assert db.value("count_tickets") == 1


async def test_unknown_path_and_wrong_method_answer_json(client):
    not_found = await client.get("/nothing-here")
    assert not_found.status == 404
    assert await not_found.json() == {"error": "not found"}

    wrong_method = await client.get("/ticket")
    assert wrong_method.status == 405
    assert "error" in await wrong_method.json()
    assert "POST" in wrong_method.headers["Allow"]


async def test_unexpected_error_is_500_without_internals_and_logged_with_the_ticket_id(client, caplog):
    async def explode(ticket, **_):
        raise RuntimeError("secret internal detail")

    client.server.app[INGEST].submit = explode
    with caplog.at_level(logging.ERROR, logger="myticket.app"):
        response = await client.post("/ticket", data=REFERENCE_TICKET)

    assert response.status == 500
    assert await response.json() == {"error": "internal error"}
    assert "secret" not in await response.text()
    logged = [record for record in caplog.records if "unexpected error" in record.getMessage()]
    assert len(logged) == 1
    assert "(ticket " in logged[0].getMessage() and "none" not in logged[0].getMessage()


async def test_ping_answers_pong_and_ready_answers_200(client):
    ping = await client.get("/ping")
    assert ping.status == 200
    assert await ping.text() == "pong"

    ready = await client.get("/ready")
    assert ready.status == 200
    state = await ready.json()
    assert state["status"] == "ready"
    assert state["spool"] == {
        "mode": False, "tickets": 0, "bytes": state["spool"]["bytes"], "problem": None, "quarantined": []
    }


async def test_ready_is_503_naming_a_shipped_migration_the_database_lacks(aiohttp_client, settings, db):
    """As after deploying a release whose migration did not run: the database answers,
    but would refuse the new release's tickets."""
    app = await init_app(dataclasses.replace(settings, run_worker=False))
    app[EXPECTED_MIGRATIONS] = app[EXPECTED_MIGRATIONS] | {"9999_shipped_not_applied"}
    client = await aiohttp_client(app)

    ready = await client.get("/ready")

    assert ready.status == 503
    assert ready.headers["Retry-After"] == "5"
    # Only the missing id: every migration the database does have was read from it.
    assert await ready.json() == {"error": "migrations not applied: 9999_shipped_not_applied"}
