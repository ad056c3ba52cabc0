"""`make run` with the embedded PostgreSQL, and every other command beside it.

Only the process that started the embedded server stops it. These tests run the
service as `make run` does (no DATABASE_URL), then the other commands against the
same data directory, and check after each that the service still commits tickets to
PostgreSQL (not to the spool)."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from myticket.db.embedded import EmbeddedPostgres

from ..database import Db
from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..service_process import Service
from ..waiting import wait_until


@pytest.fixture
async def make_run(tmp_path: Path) -> AsyncIterator[Service]:
    service = Service(None, tmp_path / "data")
    await service.start()
    yield service
    service.stop()


async def post_ticket(base: str, body: bytes = REFERENCE_TICKET) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/ticket", data=body) as response:
            assert response.status == 202, await response.text()
            return (await response.json())["id"]


async def assert_tickets_reach_postgres(service: Service) -> None:
    """Ready, not spooling, and a new ticket is in PostgreSQL with its exact bytes."""
    state = await service.ready_state()
    assert state is not None and state["status"] == "ready", state
    assert state["spool"]["mode"] is False
    ticket_id = await post_ticket(service.base)
    url = service.run("database-url").stdout.strip()
    database = Db(url)
    try:
        [(stored_id, body, _content_type, _status)] = database.rows("ticket_delivery", {"id": ticket_id})
    finally:
        database.close()
    assert stored_id == ticket_id and bytes(body) == REFERENCE_TICKET
    state = await service.ready_state()
    assert state is not None and state["spool"]["tickets"] == 0


def one_line_without_traceback(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


async def wait_for_line(path: Path, text: str, process: subprocess.Popen) -> None:
    async def written() -> bool:
        assert process.poll() is None, path.read_text()
        return text in path.read_text()

    await wait_until(written, timeout=60, what=f"{text!r} in {path.name}")


async def test_other_commands_use_the_running_embedded_server_and_never_stop_it(make_run: Service, tmp_path: Path):
    service = make_run
    url = service.run("database-url").stdout.strip()
    assert urlsplit(url).port == int(service.env["MYTICKET_EMBEDDED_PORT"])
    await assert_tickets_reach_postgres(service)

    for command in (("migrate",), ("reprocess",), ("reprocess", "--dry-run")):
        result = service.run(*command)
        assert result.returncode == 0, result.stderr
        await assert_tickets_reach_postgres(service)

    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as output:
        worker = subprocess.Popen(
            service.command("worker"), cwd=PROJECT_ROOT, env={**service.env, "LOG_LEVEL": "INFO"},
            stdout=output, stderr=subprocess.STDOUT,
        )
    await wait_for_line(worker_log, "worker started", worker)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait, 30) == 0
    await assert_tickets_reach_postgres(service)

    second = Service(
        None, service.data_dir, log_name="second.log",
        MYTICKET_EMBEDDED_PORT=service.env["MYTICKET_EMBEDDED_PORT"], HTTP_PROCESSES="2",
    )
    try:
        await second.start()
        await post_ticket(second.base)
        second.signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.to_thread(second.process.wait, 30) == 0
    finally:
        second.stop(embedded_server_too=False)
    await assert_tickets_reach_postgres(service)

    same_port = service.run("serve", LOG_LEVEL="INFO")
    assert same_port.returncode != 0
    line = one_line_without_traceback(same_port.stderr)
    assert "HTTP_PORT" in line and "in use" in line
    assert "worker" not in same_port.stderr and "PostgreSQL" not in same_port.stderr
    await assert_tickets_reach_postgres(service)

    bad_host = service.run("serve", HTTP_HOST="no-such-host.invalid", LOG_LEVEL="INFO")
    assert bad_host.returncode != 0
    assert "HTTP_HOST" in one_line_without_traceback(bad_host.stderr)
    await assert_tickets_reach_postgres(service)


async def test_the_server_stops_with_the_serve_that_started_it(make_run: Service):
    service = make_run
    pgdata = service.data_dir / "pgdata"
    service.signal(signal.SIGTERM)
    assert await asyncio.to_thread(service.process.wait, 30) == 0
    assert not EmbeddedPostgres(pgdata).is_running()


async def test_a_server_orphaned_by_kill_9_is_taken_over_by_the_next_serve(make_run: Service):
    service = make_run
    pgdata = service.data_dir / "pgdata"
    url_before = service.run("database-url").stdout.strip()
    service.signal(signal.SIGKILL)
    await asyncio.to_thread(service.process.wait)
    assert EmbeddedPostgres(pgdata).is_running(), "pg_ctl detaches the server: a kill -9 leaves it running"

    await service.start()
    assert service.run("database-url").stdout.strip() == url_before  # the same address after a restart
    await assert_tickets_reach_postgres(service)
    service.signal(signal.SIGTERM)
    assert await asyncio.to_thread(service.process.wait, 30) == 0
    assert not EmbeddedPostgres(pgdata).is_running()


async def test_an_embedded_port_in_use_fails_the_start_in_one_line_naming_the_setting(tmp_path: Path):
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        taken = other_program.getsockname()[1]
        service = Service(None, tmp_path / "data", MYTICKET_EMBEDDED_PORT=str(taken))
        result = service.run("serve", LOG_LEVEL="WARNING")
    assert result.returncode == 1
    line = one_line_without_traceback(result.stderr)
    assert "MYTICKET_EMBEDDED_PORT" in line and str(taken) in line
    assert not (tmp_path / "data" / "pgdata").exists(), "a failed start must change nothing (no initdb)"


def test_database_url_prints_the_configured_url_or_the_embedded_address(tmp_path: Path):
    service = Service(None, tmp_path / "data", MYTICKET_EMBEDDED_PORT="6543")
    not_running = service.run("database-url")
    assert not_running.returncode == 1  # a script must not go on with a dead address
    assert not_running.stdout.strip() == "postgresql://postgres@127.0.0.1:6543/postgres"
    assert "not running" in not_running.stderr

    configured = service.run("database-url", DATABASE_URL="postgresql://u:secret@db.example:5432/tickets")
    assert configured.stdout.strip() == "postgresql://u:secret@db.example:5432/tickets"


def test_version_is_the_package_version():
    version = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = subprocess.run(
        [sys.executable, "-m", "myticket", "--version"], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT
    )
    assert result.stdout.strip() == f"myticket {version}"


async def test_a_worker_outlives_the_serve_that_started_the_server_and_resumes_with_the_next(tmp_path: Path):
    service = Service(None, tmp_path / "data", serve_args=("--no-worker",))
    worker_log = tmp_path / "worker.log"
    await service.start()
    try:
        with worker_log.open("w") as output:
            worker = subprocess.Popen(
                service.command("worker"), cwd=PROJECT_ROOT, env={**service.env, "LOG_LEVEL": "INFO"},
                stdout=output, stderr=subprocess.STDOUT,
            )
        await wait_for_line(worker_log, "worker started", worker)
        service.signal(signal.SIGTERM)  # stops the embedded server it started
        assert await asyncio.to_thread(service.process.wait, 30) == 0
        await wait_for_line(worker_log, "database unavailable", worker)

        await service.start()  # the server is back at the same address
        ticket_id = await post_ticket(service.base)

        async def processed() -> bool:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{service.base}/tickets/{ticket_id}") as response:
                    return (await response.json())["status"] == "processed"

        await wait_until(processed, timeout=60, what="the standalone worker to process a ticket after the restart")
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, 30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        service.stop()


async def test_the_serve_that_owns_the_server_starts_it_again_after_a_crash(make_run: Service):
    service = make_run
    EmbeddedPostgres(service.data_dir / "pgdata").stop("immediate")  # as a crash or an OOM kill would

    async def back_and_ready() -> bool:
        state = await service.ready_state()
        return state is not None and state["status"] == "ready" and state["spool"]["tickets"] == 0

    await wait_until(back_and_ready, timeout=60, what="the embedded server to be started again by its serve")
    assert "stopped unexpectedly; starting it again" in service.log.read_text()
    await assert_tickets_reach_postgres(service)
