"""Shared fixtures: a real PostgreSQL server (embedded, started here), a migrated test
database emptied before each test, and an aiohttp test client on a fresh app."""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2 import sql as pgsql

from myticket.web.app import init_app
from myticket.config import Settings
from myticket.db.embedded import EmbeddedPostgres
from myticket.db.migrate import apply_migrations
from myticket.db.resources import named_queries

TESTS_DIR = Path(__file__).resolve().parent
SUPPORT_QUERIES = named_queries(TESTS_DIR / "sql")
PROJECT_ROOT = TESTS_DIR.parent
REFERENCE_TICKET = (PROJECT_ROOT / "bench" / "ticket.txt").read_bytes()
CP1252_TICKET = "Order: 77\nVAT: 0.50\nTotal: 3.00\n\nproduct,product_id,price\nCafé crème,CC01,3.00\n".encode("cp1252")


def url_for_database(server_url: str, name: str) -> str:
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


def create_empty_database(server_url: str, name: str) -> str:
    """Drop and create database `name` on the server; return its URL."""
    conn = psycopg2.connect(server_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
            cur.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
    finally:
        conn.close()
    return url_for_database(server_url, name)


class Db:
    """Synchronous access for assertions, through named queries only."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True

    def rows(self, name: str, params: dict | None = None) -> list[tuple]:
        try:
            return self._rows(name, params)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # The server was restarted under this connection (outage tests): reconnect once.
            self.conn.close()
            self.conn = psycopg2.connect(self.url)
            self.conn.autocommit = True
            return self._rows(name, params)

    def _rows(self, name: str, params: dict | None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(SUPPORT_QUERIES[name], params)
            return cur.fetchall() if cur.description is not None else []

    def value(self, name: str, params: dict | None = None):
        rows = self.rows(name, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        self.conn.close()


@pytest.fixture(scope="session", autouse=True)
def temp_dirs_reachable_by_the_embedded_server(tmp_path_factory: pytest.TempPathFactory) -> None:
    """As root, the embedded server runs as its own user, which must pass through every
    directory above a data directory; the service never widens them (it refuses to start
    instead, see EmbeddedPostgres._prepare_for_root). pytest makes its temporary
    directories 0700: this run lets the server's user through them (o+x, traverse only),
    as an operator would for a data directory of theirs."""
    if os.geteuid() != 0:
        return
    base = tmp_path_factory.getbasetemp()
    for directory in (base, *base.parents):
        mode = stat.S_IMODE(directory.stat().st_mode)
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server for the session: MYTICKET_TEST_DATABASE_URL, or an embedded one."""
    external = os.environ.get("MYTICKET_TEST_DATABASE_URL")
    if external:
        yield external
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata")
    url = server.start()
    yield url
    server.stop()


def private_server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[EmbeddedPostgres]:
    """A migrated server of a test module's own, which its tests may stop and start."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp(name) / "pgdata")
    apply_migrations(server.start())
    yield server
    server.stop()


def emptied_database(server: EmbeddedPostgres) -> Iterator[Db]:
    """Db on `server` (started again if a test left it stopped), with its tables emptied."""
    if not server.is_running():
        server.start()
    database = Db(server.url)
    database.rows("reset_tables")
    yield database
    database.close()


@pytest.fixture(scope="session")
def database_url(pg_server_url: str) -> str:
    url = create_empty_database(pg_server_url, "myticket_test")
    apply_migrations(url)
    return url


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    database = Db(database_url)
    database.rows("reset_tables")
    yield database
    database.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The worker as tasks of the app under test, which the tests can watch and await;
    # the default placement, a worker process, has tests of its own (test_worker_process).
    return Settings(database_url=database_url, data_dir=tmp_path, worker_placement="inline")


@pytest.fixture
async def client(aiohttp_client, settings: Settings, db: Db):
    return await aiohttp_client(await init_app(settings))


@pytest.fixture
async def quiet_app(aiohttp_client, settings: Settings, db: Db):
    """An app without its own worker, so the test drives processing itself."""
    return await aiohttp_client(await init_app(dataclasses.replace(settings, run_worker=False)))
