"""PostgreSQL for the integration and process tiers: the session's server and its
migrated test database (fixtures each tier's conftest.py takes from here), a module's
private server that its tests may stop and start, and `Db`, synchronous access for
assertions through the named queries of tests/sql."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg2
import pytest
from psycopg2 import sql as pgsql

from myticket.db.embedded import EmbeddedPostgres
from myticket.db.migrate import apply_migrations
from myticket.db.resources import load_queries, named_queries

from .paths import TESTS_DIR

SUPPORT_QUERIES = named_queries(TESTS_DIR / "sql")
TEST_DATABASE = "myticket_test"

# Each tier's conftest.py registers the fixtures below, so pytest holds one definition per
# tier; the server and the migrated database live in the session's stash instead, so that
# a run of both tiers starts one server and migrates one database.
_SERVER_URL = pytest.StashKey[str]()
_DATABASE_URL = pytest.StashKey[str]()


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


def planned_nodes(database_url: str, name: str, params: dict) -> list[dict]:
    """Every node of the plan of the shipped query `name` with `params`, as psycopg2 sends
    them (literals, as the service does); EXPLAIN before the shipped text, not a rebuilt one."""
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("EXPLAIN (FORMAT JSON) " + load_queries()[name], params)
            [[document]] = cur.fetchall()
    finally:
        conn.close()
    plan = (document if isinstance(document, list) else json.loads(document))[0]["Plan"]
    return list(_depth_first(plan))


def _depth_first(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans", []):
        yield from _depth_first(child)


def emptied(url: str) -> Iterator[Db]:
    """Db on `url` with its tables emptied, closed after the test."""
    database = Db(url)
    database.rows("reset_tables")
    yield database
    database.close()


@pytest.fixture(scope="session")
def pg_server_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PostgreSQL server for the session: MYTICKET_TEST_DATABASE_URL, or an embedded one."""
    external = os.environ.get("MYTICKET_TEST_DATABASE_URL")
    if external:
        return external
    stash = request.config.stash
    if _SERVER_URL not in stash:
        server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata")
        stash[_SERVER_URL] = server.start()
        request.config.add_cleanup(server.stop)
    return stash[_SERVER_URL]


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, pg_server_url: str) -> str:
    """The migrated test database, made once a session."""
    stash = request.config.stash
    if _DATABASE_URL not in stash:
        url = create_empty_database(pg_server_url, TEST_DATABASE)
        apply_migrations(url)
        stash[_DATABASE_URL] = url
    return stash[_DATABASE_URL]


@pytest.fixture
def db(database_url: str) -> Iterator[Db]:
    """The test database, emptied before the test."""
    yield from emptied(database_url)
