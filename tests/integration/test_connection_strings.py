"""Every connection string libpq documents reaches the database, everywhere the service
connects: multi-host URLs in both forms (the first host a closed port), key/value, a
password file (passfile=, PGPASSFILE), through migrations, the start-up check, the pool
and the CLI commands."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest

from myticket.db.migrate import apply_migrations, prepare_database
from myticket.db.repository import Repository

from ..paths import PROJECT_ROOT
from ..service_process import free_port


@pytest.fixture
def server(database_url: str) -> dict[str, str]:
    parts = urlsplit(database_url)
    return {"host": parts.hostname, "port": str(parts.port), "user": parts.username, "password": parts.password,
            "dbname": parts.path.lstrip("/"), "closed": str(free_port())}


@pytest.fixture
def passfile(server, tmp_path) -> str:
    path = tmp_path / "pgpass"
    path.write_text(f"{server['host']}:{server['port']}:{server['dbname']}:{server['user']}:{server['password']}\n")
    path.chmod(0o600)  # libpq ignores a password file others can read
    return str(path)


def connection_strings(server, passfile) -> dict[str, str]:
    s = server
    return {
        "url-host-list": (f"postgresql://{s['user']}:{s['password']}@127.0.0.1:{s['closed']},{s['host']}:{s['port']}"
                          f"/{s['dbname']}?target_session_attrs=read-write"),
        "url-query-hosts": (f"postgresql://{s['user']}:{s['password']}@/{s['dbname']}?host=127.0.0.1,{s['host']}"
                            f"&port={s['closed']},{s['port']}&target_session_attrs=read-write"),
        "key-value-passfile": (f"host=127.0.0.1,{s['host']} port={s['closed']},{s['port']} dbname={s['dbname']} "
                               f"user={s['user']} passfile={passfile} target_session_attrs=primary"),
    }


FORMS = ["url-host-list", "url-query-hosts", "key-value-passfile"]


@pytest.mark.parametrize("form", FORMS)
async def test_migrations_the_start_check_and_the_pool_reach_the_database(server, passfile, form, db):
    connection_string = connection_strings(server, passfile)[form]
    assert apply_migrations(connection_string) == []  # up to date, and reached through the list
    identity = prepare_database(connection_string)
    assert identity.database_name == server["dbname"]
    repository = await Repository.connect(connection_string)
    try:
        assert await repository.count_pending() == 0
        async with repository.ticket_notifications():
            pass
        async with repository.maintenance_lock() as held:
            assert held
    finally:
        await repository.close()


@pytest.mark.parametrize("command", [["migrate"], ["database-url"], ["reprocess", "--dry-run"],
                                     ["archive", "--before", "2001-01-01", "--to", "{tmp}"],
                                     ["purge", "--before", "2001-01-01"]])
def test_cli_commands_take_the_multi_host_url_and_pgpassfile(server, passfile, command, db, tmp_path):
    command = [part.replace("{tmp}", str(tmp_path / "archive")) for part in command]
    s = server
    url = (f"postgresql://{s['user']}@{'127.0.0.1'}:{s['closed']},{s['host']}:{s['port']}/{s['dbname']}"
           "?target_session_attrs=read-write")
    env = {**os.environ, "DATABASE_URL": url, "PGPASSFILE": passfile, "LOG_LEVEL": "ERROR"}
    result = subprocess.run([sys.executable, "-m", "myticket", *command], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (result.returncode, result.stderr) == (0, "")
    if command == ["database-url"]:
        assert result.stdout.strip() == url  # what was given
