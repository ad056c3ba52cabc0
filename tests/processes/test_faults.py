"""Fault tests on real processes: the service as `python -m myticket serve`, its own
PostgreSQL, distinct tickets from many concurrent clients. Each records every id
answered 2xx and checks that every one is in `tickets` with its exact bytes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from myticket.db.embedded import EmbeddedPostgres
from myticket.worker.supervision import restart_delay

from ..database import Db
from ..helpers import sample
from ..load import SendResult, make_tickets, send_tickets
from ..service_process import Service
from ..waiting import wait_until

BURST = 5000
CLIENTS = 64


@pytest.fixture
def service(own_server: EmbeddedPostgres, own_db: Db, tmp_path: Path) -> Iterator[Service]:
    svc = Service(own_server.url, tmp_path / "data")
    yield svc
    svc.stop()


async def acked_at_least(result: SendResult, count: int) -> None:
    async def enough() -> bool:
        return len(result.acked) >= count

    await wait_until(enough, timeout=60, what=f"{count} acknowledgements")


def assert_every_acknowledged_ticket_is_stored(db: Db, result: SendResult, bodies: list[bytes]) -> None:
    assert result.acked, "the test acknowledged nothing, so it proves nothing"
    stored = {row[0] for row in db.rows("stored_ids")}
    missing = [ticket_id for ticket_id in result.acked.values() if ticket_id not in stored]
    assert missing == []
    for index, ticket_id in list(result.acked.items())[::97]:
        assert bytes(db.rows("ticket_delivery", {"id": ticket_id})[0][1]) == bodies[index]


class Burst:
    """Distinct tickets sent in the background by CLIENTS concurrent clients."""

    def __init__(self, service: Service, count: int, *, seed: int) -> None:
        self.bodies = make_tickets(count, seed=seed)
        self.result = SendResult()
        self.sending = asyncio.create_task(
            send_tickets(
                "127.0.0.1", service.port, self.bodies, concurrency=CLIENTS, deadline_seconds=120, result=self.result
            )
        )

    async def acked_at_least(self, count: int) -> None:
        await acked_at_least(self.result, count)

    async def finished(self) -> SendResult:
        return await self.sending


async def test_kill_9_in_the_middle_of_a_burst_loses_no_acknowledged_ticket(service, own_db):
    await service.start()
    burst = Burst(service, BURST, seed=101)

    await burst.acked_at_least(BURST // 4)
    service.signal(signal.SIGKILL)
    result = await burst.finished()
    assert result.connection_errors > 0, "the kill should have cut some requests"

    await service.start()
    assert_every_acknowledged_ticket_is_stored(own_db, result, burst.bodies)


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes-sharing-the-spool"])
async def test_postgres_stopped_during_a_burst_spools_without_5xx_then_replays(service, own_server, own_db, processes):
    service.env["HTTP_PROCESSES"] = str(processes)
    await service.start()
    burst = Burst(service, BURST, seed=102)

    await burst.acked_at_least(BURST // 5)
    await asyncio.to_thread(own_server.stop, "immediate")
    acked_before_the_outage = len(burst.result.acked)
    await burst.acked_at_least(acked_before_the_outage + BURST // 5)  # spooled while it is down
    await asyncio.to_thread(own_server.start)
    result = await burst.finished()

    assert [status for status in result.statuses if status >= 500] == []
    assert sum(result.statuses.values()) == BURST
    await wait_until(service.spool_drained, timeout=60, what="the spool to be replayed")
    assert_every_acknowledged_ticket_is_stored(own_db, result, burst.bodies)


async def test_unwritable_spool_with_postgres_down_acknowledges_nothing(own_server, own_db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("the spool directory cannot be created under a file")
    service = Service(own_server.url, tmp_path / "data", MYTICKET_SPOOL_DIR=str(blocker / "spool"))
    await service.start()
    try:
        await asyncio.to_thread(own_server.stop, "immediate")
        bodies = make_tickets(300, seed=103)
        result = await send_tickets("127.0.0.1", service.port, bodies, concurrency=CLIENTS, deadline_seconds=60)

        assert result.acked == {}
        assert dict(result.statuses) == {503: 300}
    finally:
        await asyncio.to_thread(own_server.start)
        service.stop()
    assert own_db.value("count_tickets") == 0


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
async def test_sigterm_during_a_burst_exits_0_within_10_seconds_and_keeps_every_ticket(service, own_db, processes):
    service.env["HTTP_PROCESSES"] = str(processes)
    await service.start()
    burst = Burst(service, BURST, seed=104)

    await burst.acked_at_least(BURST // 4)
    service.signal(signal.SIGTERM)
    exit_code = await asyncio.to_thread(service.process.wait, 10)
    result = await burst.finished()

    assert exit_code == 0
    assert_every_acknowledged_ticket_is_stored(own_db, result, burst.bodies)


async def test_kill_9_while_spooling_loses_nothing_after_restart(service, own_server, own_db):
    await service.start()
    await asyncio.to_thread(own_server.stop, "immediate")
    burst = Burst(service, 2000, seed=105)

    await burst.acked_at_least(500)
    service.signal(signal.SIGKILL)
    result = await burst.finished()
    await asyncio.to_thread(own_server.start)

    await service.start()
    await wait_until(service.spool_drained, timeout=60, what="the spool left by the killed service to be replayed")
    assert_every_acknowledged_ticket_is_stored(own_db, result, burst.bodies)


async def test_sigterm_under_make_run_stops_the_embedded_postgres_and_exits_0(tmp_path):
    data_dir = tmp_path / "data"
    service = Service(None, data_dir)  # as under `make run`: the service starts its own PostgreSQL
    await service.start()
    try:
        burst = Burst(service, 1000, seed=106)
        await burst.acked_at_least(200)
        service.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(service.process.wait, 10)
        await burst.finished()
    finally:
        service.stop()

    assert exit_code == 0
    embedded = EmbeddedPostgres(data_dir / "pgdata")  # a fresh handle: is anything still running?
    assert not embedded.is_running()
    assert not (data_dir / "pgdata" / "postmaster.pid").exists()


def child_processes() -> dict[int, list[tuple[int, bytes]]]:
    """Live processes by parent pid: (pid, command line) of each child."""
    children: dict[int, list[tuple[int, bytes]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append((int(stat.parent.name), cmdline))
    return children


def worker_processes(service_pid: int) -> list[int]:
    """Worker processes whose parent is `service_pid`, once they carry their title."""
    return [pid for pid, cmdline in child_processes().get(service_pid, []) if cmdline.startswith(b"myticket: worker")]


async def the_worker_process(service_pid: int, *, other_than: int | None = None) -> int:
    """The pid of the one worker process of `service_pid` (a new one, with `other_than`)."""
    found: list[int] = []

    async def one_worker() -> bool:
        found[:] = worker_processes(service_pid)
        return len(found) == 1 and found[0] != other_than

    await wait_until(one_worker, timeout=30, what="one worker process")
    return found[0]


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, children of children included."""
    children = child_processes()
    found, todo = [], [pid]
    while todo:
        for child, _ in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def is_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def processed_total(service: Service) -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.base}/metrics") as response:
            text = await response.text()
    return sum(
        int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
        if line.startswith("myticket_tickets_processed_total{")
    )


async def all_settled(db: Db, count: int) -> None:
    async def settled() -> bool:
        statuses = dict(db.rows("status_counts"))
        return statuses.get("pending", 0) == 0 and sum(statuses.values()) == count

    await wait_until(settled, timeout=60, what=f"{count} tickets to be processed")


async def test_the_worker_runs_in_its_own_process_and_its_metrics_reach_the_service(service, own_db):
    await service.start()
    assert await the_worker_process(service.process.pid) != service.process.pid

    sent = await send_tickets("127.0.0.1", service.port, make_tickets(300, seed=107), concurrency=16)
    await all_settled(own_db, 300)

    async def reported() -> bool:
        return await processed_total(service) == 300

    assert len(sent.acked) == 300
    await wait_until(reported, timeout=30, what="the worker process's counts in the service's /metrics")


async def test_a_killed_worker_process_is_replaced_and_processing_goes_on(service, own_db):
    await service.start()
    first = await the_worker_process(service.process.pid)

    os.kill(first, signal.SIGKILL)

    await the_worker_process(service.process.pid, other_than=first)
    sent = await send_tickets("127.0.0.1", service.port, make_tickets(100, seed=108), concurrency=8)
    assert len(sent.acked) == 100
    await all_settled(own_db, 100)
    assert "worker process %d exited" % first in service.log.read_text()


@pytest.mark.parametrize("processes", [1, 2], ids=["one-process", "two-processes"])
async def test_no_process_of_the_service_outlives_it_when_it_is_killed(service, own_db, processes):
    service.env["HTTP_PROCESSES"] = str(processes)
    await service.start()
    spawned = descendants(service.process.pid)
    # HTTP processes and the worker process (the resource tracker of `spawn` comes along).
    assert len(spawned) >= (1 if processes == 1 else processes + 1)

    service.signal(signal.SIGKILL)
    await asyncio.to_thread(service.process.wait)

    async def all_gone() -> bool:
        return not any(is_alive(pid) for pid in spawned)

    await wait_until(all_gone, timeout=30, what="the processes the killed service left to stop")


@pytest.mark.parametrize(("short_lives", "seconds"), [(0, 1), (1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)])
def test_a_worker_that_keeps_dying_is_restarted_less_and_less_often(short_lives, seconds):
    assert restart_delay(short_lives) == seconds


def process_title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode().strip()


async def test_every_process_of_the_service_is_named_in_ps(service, own_db):
    service.env["HTTP_PROCESSES"] = "2"
    await service.start()

    async def all_named() -> bool:
        titles = [process_title(pid) for pid in descendants(service.process.pid) if is_alive(pid)]
        return {"myticket: http 0", "myticket: http 1", "myticket: worker"} <= set(titles)

    await wait_until(all_named, timeout=30, what="the HTTP and worker processes to carry their titles")
    assert process_title(service.process.pid) == "myticket: serve (supervisor of 2 http processes)"


async def test_a_worker_process_started_while_postgres_is_down_waits_for_it(service, own_server, own_db):
    service.env["LOG_LEVEL"] = "INFO"
    await service.start()
    first = await the_worker_process(service.process.pid)
    await asyncio.to_thread(own_server.stop, "immediate")
    try:
        os.kill(first, signal.SIGKILL)
        replacement = await the_worker_process(service.process.pid, other_than=first)

        async def waiting_for_the_database() -> bool:
            return "worker paused, database unavailable" in service.log.read_text()

        await wait_until(waiting_for_the_database, timeout=30, what="the new worker to notice the outage")
        assert is_alive(replacement)
    finally:
        await asyncio.to_thread(own_server.start)
    sent = await send_tickets("127.0.0.1", service.port, make_tickets(50, seed=109), concurrency=4)
    assert len(sent.acked) == 50
    await all_settled(own_db, 50)
    assert worker_processes(service.process.pid) == [replacement]
    assert "exited with code 1" not in service.log.read_text()


async def test_a_client_that_leaves_mid_body_is_a_4xx_line_not_a_500_traceback(service, own_db):
    service.env["LOG_LEVEL"] = "INFO"
    await service.start()
    for _ in range(3):
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(b"POST /ticket HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        await writer.drain()
        writer.close()  # 3 of the 1,000 bytes announced

    async def counted() -> bool:
        return await metric_sample(service, "myticket_tickets_refused_total", {"reason": "client_disconnected"}) == 3

    await wait_until(counted, timeout=30, what="the three aborted uploads to be counted")
    assert await metric_sample(
        service, "myticket_http_requests_total", {"method": "POST", "route": "/ticket", "status": "500"}
    ) is None
    def refusals_logged() -> int:
        """Lines in full, plus the counts of their one-per-second summaries."""
        log = service.log.read_text()
        summaries = re.findall(r"400 on POST /ticket: (\d+) more like this", log)
        return log.count("connection lost before the whole body arrived") + sum(map(int, summaries))

    async def all_logged() -> bool:
        return refusals_logged() == 3

    await wait_until(all_logged, timeout=30, what="the three refusals logged or counted in a summary")
    assert "Traceback" not in service.log.read_text()
    assert own_db.value("count_tickets") == 0


async def metric_sample(service: Service, name: str, labels: dict[str, str] | None = None) -> float | None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{service.base}/metrics") as response:
            return sample(await response.text(), name, labels)


async def test_a_request_aiohttp_cannot_parse_is_one_info_line_not_an_error_traceback(service, own_db):
    service.env["LOG_LEVEL"] = "INFO"
    await service.start()
    malformed = [
        b"GET /ping HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /ticket HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    ]
    for request in malformed:
        reader, writer = await asyncio.open_connection("127.0.0.1", service.port)
        writer.write(request)
        answer = await reader.read()
        writer.close()
        assert answer.split(b" ", 2)[1] == b"400", answer[:100]

    async def logged() -> bool:
        # One line, then the repeats within the second as a summary's count.
        log = service.log.read_text()
        summaries = re.findall(r"400 on a malformed HTTP request: (\d+) more like this", log)
        return log.count("on a malformed HTTP request from") + sum(map(int, summaries)) == len(malformed)

    await wait_until(logged, timeout=15, what="every malformed request logged or counted")
    log = service.log.read_text()
    assert "Traceback" not in log and "ERROR" not in log
