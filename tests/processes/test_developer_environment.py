"""`make test` beside a running `make run`, in a shell that exports the service's
settings as the README's examples do: the tests still choose their own ports, data
directories and database, and leave the developer's alone."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ..database import Db
from ..environment import child_environment
from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..service_process import Service


@pytest.fixture
def taken_ports() -> Iterator[list[socket.socket]]:
    """Two ports in use, as `make run`'s HTTP server and embedded PostgreSQL hold theirs."""
    listeners = []
    try:
        for _ in range(2):
            listener = socket.socket()
            listeners.append(listener)
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
        yield listeners
    finally:
        for listener in listeners:
            listener.close()


def contents(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def never_connected(listener: socket.socket) -> bool:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


async def test_the_service_and_its_commands_ignore_the_exported_port_and_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, taken_ports: list[socket.socket]
):
    http_listener, postgres_listener = taken_ports
    developer_data = tmp_path / "developer-data"
    developer_data.mkdir()
    (developer_data / "left-by-make-run").write_text("must stay as it is")
    before = contents(developer_data)
    taken_embedded_port = postgres_listener.getsockname()[1]
    monkeypatch.setenv("HTTP_PORT", str(http_listener.getsockname()[1]))
    monkeypatch.setenv("MYTICKET_EMBEDDED_PORT", str(taken_embedded_port))
    monkeypatch.setenv("MYTICKET_DATA_DIR", str(developer_data))

    service = Service(None, tmp_path / "data")
    try:
        await service.start()
        sent = service.run("send", str(PROJECT_ROOT / "bench" / "ticket.txt"))
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("202 "), sent.stdout
        ticket_id = json.loads(sent.stdout.split("\n", 1)[1])["id"]

        url = service.run("database-url").stdout.strip()
        assert urlsplit(url).port == int(service.env["MYTICKET_EMBEDDED_PORT"]) != taken_embedded_port
        database = Db(url)
        try:
            [(_id, body, _content_type, _status)] = database.rows("ticket_delivery", {"id": ticket_id})
        finally:
            database.close()
        assert bytes(body) == REFERENCE_TICKET
    finally:
        service.stop()

    assert (tmp_path / "data" / "pgdata").is_dir()
    assert contents(developer_data) == before
    assert never_connected(http_listener) and never_connected(postgres_listener)


PROBE = '''
import os

def test_the_session_sees_none_of_the_service_variables():
    exported = ("DATABASE_URL", "HTTP_PORT", "LOG_LEVEL", "MYTICKET_EMBEDDED_PORT", "MYTICKET_DATA_DIR",
                "MYTICKET_NOT_YET_A_SETTING")
    assert [name for name in exported if name in os.environ] == []
    assert os.environ["MYTICKET_TEST_DATABASE_URL"] == "postgresql://tests-only"
'''


def test_a_pytest_session_drops_the_exported_service_variables_but_the_tests_own(tmp_path: Path):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    exported = child_environment(
        DATABASE_URL="postgresql://developer@127.0.0.1:5811/theirs", HTTP_PORT="9311", LOG_LEVEL="DEBUG",
        MYTICKET_EMBEDDED_PORT="5811", MYTICKET_DATA_DIR=str(tmp_path / "developer-data"),
        MYTICKET_NOT_YET_A_SETTING="1", MYTICKET_TEST_DATABASE_URL="postgresql://tests-only",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", "pyproject.toml", "-p", "tests.conftest",
         str(probe)],
        cwd=PROJECT_ROOT, env=exported, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
