"""Failover without a person: the service given every host of a primary and its
synchronous standby (libpq's multi-host URL) finds the writable one by itself: when the
first listed host is down at start, when a standby is listed first, when the primary
turns read-only (SQLSTATE 25006), and when the primary's machine is lost mid-burst and
the standby promoted. Every acknowledged ticket ends on the new primary, byte for byte.

PostgreSQL comes from the embedded wheel only (initdb, pg_basebackup, pg_ctl)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psycopg2
import pytest

from myticket.db.embedded import EmbeddedPostgres
from myticket.db.migrate import apply_migrations

from ..database import Db
from ..load import SendResult, make_tickets, send_tickets
from ..replication import ReplicatedPair, reconfigure, run_query
from ..service_process import Service, free_port
from ..waiting import wait_until

CLIENTS = 16


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicatedPair]:
    """Shared by the tests in file order; the failover test, last, kills its primary."""
    replicated = ReplicatedPair(tmp_path_factory.mktemp("replicated"))
    replicated.start()
    yield replicated
    replicated.stop()


def assert_stored_byte_for_byte(url: str, result: SendResult, bodies: list[bytes]) -> None:
    assert result.acked, "the test acknowledged nothing, so it proves nothing"
    database = Db(url)
    try:
        stored = {row[0] for row in database.rows("stored_ids")}
        assert [ticket_id for ticket_id in result.acked.values() if ticket_id not in stored] == []
        for index, ticket_id in result.acked.items():
            assert bytes(database.rows("ticket_delivery", {"id": ticket_id})[0][1]) == bodies[index]
    finally:
        database.close()


def assert_no_5xx_but_503(result: SendResult) -> None:
    assert [status for status in result.statuses if status >= 500 and status != 503] == []


async def status_of(service: Service) -> str | None:
    state = await service.ready_state()
    return state["status"] if state is not None else None


async def send(service: Service, count: int, *, seed: int) -> tuple[SendResult, list[bytes]]:
    bodies = make_tickets(count, seed=seed)
    return await send_tickets("127.0.0.1", service.port, bodies, concurrency=CLIENTS, deadline_seconds=60), bodies


async def test_first_listed_host_down_at_start_writes_to_the_next(pair, tmp_path):
    closed = free_port()
    password = pair.primary._password()
    url = (f"postgresql://postgres:{password}@/postgres?host=127.0.0.1,127.0.0.1&port={closed},{pair.primary.port}"
           "&target_session_attrs=read-write")
    service = Service(url, tmp_path / "data", serve_args=("--no-worker",))
    try:
        await service.start()
        assert await status_of(service) == "ready"
        result, bodies = await send(service, 200, seed=1901)
    finally:
        service.stop()
    assert dict(result.statuses) == {202: 200}
    assert_stored_byte_for_byte(pair.primary.url, result, bodies)


async def test_standby_listed_first_and_a_primary_turned_read_only(pair, tmp_path):
    service = Service(pair.both_hosts_url(standby_first=True), tmp_path / "data", serve_args=("--no-worker",))
    try:
        await service.start()
        assert await status_of(service) == "ready"
        before, before_bodies = await send(service, 200, seed=1902)
        assert dict(before.statuses) == {202: 200}

        # Demoted: statements meet 25006; tickets go to the spool meanwhile.
        await asyncio.to_thread(reconfigure, pair.primary.url, "make_read_only")
        during, during_bodies = await send(service, 200, seed=1903)
        await wait_until(lambda: _is(service, "spooling"), timeout=30, what="the service to notice read-only")
        await asyncio.to_thread(reconfigure, pair.primary.url, "make_writable")
        await wait_until(service.spool_drained, timeout=60, what="the spool to be replayed")
    finally:
        service.stop()
    assert_no_5xx_but_503(during)
    assert sum(during.statuses.values()) == 200
    assert_stored_byte_for_byte(pair.primary.url, before, before_bodies)
    assert_stored_byte_for_byte(pair.primary.url, during, during_bodies)


async def _is(service: Service, status: str) -> bool:
    return await status_of(service) == status


async def test_a_listed_host_of_another_cluster_never_gets_the_spool_nor_a_ticket(tmp_path):
    ours, other = (EmbeddedPostgres(tmp_path / name / "pgdata") for name in ("ours", "other"))
    for server in (ours, other):
        apply_migrations(server.start())
    password = ours._password()
    other_password = other._password()
    # The other cluster accepts the same credentials, so only its identity tells it apart.
    await asyncio.to_thread(_set_password, other.url, password)
    url = (f"postgresql://postgres:{password}@127.0.0.1:{ours.port},127.0.0.1:{other.port}/postgres"
           "?target_session_attrs=read-write")
    service = Service(url, tmp_path / "data", serve_args=("--no-worker",))
    try:
        await service.start()
        await asyncio.to_thread(ours.stop, "immediate")
        spooled, spooled_bodies = await send(service, 200, seed=1907)
        assert dict(spooled.statuses) == {202: 200}
        assert await status_of(service) == "spooling"  # the other cluster is not a way out
        other_db = Db(other.url.replace(other_password, password))
        assert other_db.value("count_tickets") == 0
        other_db.close()

        await asyncio.to_thread(ours.start)
        await wait_until(service.spool_drained, timeout=60, what="the spool replayed into its own database")
        assert_stored_byte_for_byte(ours.url, spooled, spooled_bodies)
    finally:
        service.stop()
        for server in (ours, other):
            if server.is_running():
                server.stop("immediate")


def _set_password(url: str, password: str) -> None:
    from myticket.db.resources import load_queries

    connection = psycopg2.connect(url)
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(load_queries()["set_superuser_password"], {"password": password})
    finally:
        connection.close()


async def test_read_routes_read_from_the_standby_of_MYTICKET_READ_DATABASE_URL(pair, tmp_path):
    service = Service(pair.primary.url, tmp_path / "data", serve_args=("--no-worker",),
                      MYTICKET_READ_DATABASE_URL=pair.standby.url)
    try:
        await service.start()
        await asyncio.to_thread(run_query, pair.standby.url, "pause_replay")
        await wait_until(lambda: _replay_paused(pair), timeout=30, what="the standby to pause its replay")
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{service.base}/ticket", data=make_tickets(1, seed=1906)[0]) as answer:
                assert answer.status == 202
                ticket_id = (await answer.json())["id"]
            # On the primary (synchronously flushed to the standby), not yet applied there.
            primary = Db(pair.primary.url)
            assert primary.value("ticket_delivery", {"id": ticket_id}) == ticket_id
            primary.close()
            async with session.get(f"{service.base}/tickets/{ticket_id}") as answer:
                assert answer.status == 404
            await asyncio.to_thread(run_query, pair.standby.url, "resume_replay")

            async def readable_there() -> bool:
                async with session.get(f"{service.base}/tickets/{ticket_id}") as answer:
                    return answer.status == 200

            await wait_until(readable_there, timeout=30, what="the standby to replay the ticket")
    finally:
        await asyncio.to_thread(run_query, pair.standby.url, "resume_replay")
        service.stop()


async def _replay_paused(pair: ReplicatedPair) -> bool:
    return (await asyncio.to_thread(run_query, pair.standby.url, "replay_pause_state"))[0][0] == "paused"


async def test_primary_lost_mid_burst_the_promoted_standby_gets_every_acknowledged_ticket(pair, tmp_path):
    service = Service(pair.both_hosts_url(), tmp_path / "data")
    try:
        await service.start()
        assert (await service.ready_state())["synchronous_standby"]["waits"] is True
        assert "myticket_database_synchronous_standby 1" in await metrics_of(service)
        bodies = make_tickets(3000, seed=1904)
        result = SendResult()
        sending = asyncio.create_task(send_tickets(
            "127.0.0.1", service.port, bodies, concurrency=CLIENTS, deadline_seconds=90, result=result))

        await wait_until(lambda: _acked_at_least(result, 500), timeout=60, what="500 acknowledgements")
        pair.kill_primary()  # never restarted
        killed_at_acks = len(result.acked)
        await wait_until(lambda: _acked_at_least(result, killed_at_acks + 300), timeout=60,
                         what="acknowledgements without the primary (the spool)")
        await asyncio.to_thread(pair.promote_standby)
        promoted = time.monotonic()
        await sending
        await wait_until(lambda: _is(service, "ready"), timeout=60, what="/ready to say ready")
        await wait_until(service.spool_drained, timeout=60, what="the spool replayed into the promoted standby")
        seconds_to_ready = time.monotonic() - promoted

        # The service writes there by itself: new tickets stored directly.
        after, after_bodies = await send(service, 100, seed=1905)
        assert await service.spool_drained()
        # Alone now: a 202 means "on the promoted standby's disk" only, and /ready says so.
        assert (await service.ready_state())["synchronous_standby"]["waits"] is False
        assert "myticket_database_synchronous_standby 0" in await metrics_of(service)
    finally:
        service.stop()
    print(f"failover: {len(result.acked)} acknowledged ({killed_at_acks} before the kill), "
          f"statuses {dict(result.statuses)}, ready and drained {seconds_to_ready:.1f} s after the promotion")
    assert_no_5xx_but_503(result)
    assert dict(after.statuses) == {202: 100}
    assert_stored_byte_for_byte(pair.standby.url, result, bodies)
    assert_stored_byte_for_byte(pair.standby.url, after, after_bodies)


async def metrics_of(service: Service) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.base}/metrics") as response:
            return await response.text()


async def _acked_at_least(result: SendResult, count: int) -> bool:
    return len(result.acked) >= count
