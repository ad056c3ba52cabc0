"""The one way to PostgreSQL: the pool, the shipped named queries, and the ladder
acquire -> cursor -> (transaction) -> domain errors, written once.

aiopg connections are autocommit: a single statement is its own transaction, and
multi-statement work asks `session(..., transaction=True)`. Every driver error met in a
session, including in the block of its caller, leaves as a domain error naming the
operation (`errors.domain_errors`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg2

from .errors import domain_errors, unavailable
from .failover import HostPool, create_writable_pool
from .resources import load_queries
from .rows import Row


async def _rows(cursor) -> list[Row]:
    """The cursor's result as dicts keyed by column name (empty for no result)."""
    if cursor.description is None:
        return []
    names = [column.name for column in cursor.description]
    return [dict(zip(names, row)) for row in await cursor.fetchall()]


class Session:
    """A cursor on one connection, running the shipped queries by name."""

    def __init__(self, cursor, queries: dict[str, str]) -> None:
        self._cursor = cursor
        self._queries = queries

    async def fetch(
        self, name: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> list[Row]:
        """Run query `name`; its rows (none for a statement without a result). `timeout`
        replaces the connector's statement time for a statement known to wait longer."""
        await self._cursor.execute(self._queries[name], params, timeout=timeout)
        return await _rows(self._cursor)

    @property
    def notifies(self) -> asyncio.Queue:
        """The NOTIFY messages of the session's connection (after a LISTEN)."""
        return self._cursor.connection.notifies


class Connector:
    """The pool and the named queries; what repositories call to reach PostgreSQL."""

    def __init__(self, pool: HostPool, queries: dict[str, str], database_url: str, *, statement_seconds: float):
        self._pool = pool
        self._queries = queries
        self._database_url = database_url
        self._statement_seconds = statement_seconds

    @classmethod
    async def open(
        cls, database_url: str, *, max_connections: int, min_connections: int, statement_seconds: float
    ) -> Connector:
        """A pool whose connections wait `statement_seconds` for a connect or a statement;
        with `min_connections=0` it opens no connection yet, so it can be created while
        PostgreSQL is down."""
        try:
            pool = await create_writable_pool(
                database_url,
                minsize=min_connections,
                maxsize=max_connections,
                timeout=statement_seconds,
                # hstore support costs one query per new connection; we never use it.
                enable_hstore=False,
            )
        except (psycopg2.Error, OSError) as exc:
            raise unavailable("connect", exc) from exc
        return cls(pool, load_queries(), database_url, statement_seconds=statement_seconds)

    @property
    def statement_seconds(self) -> float:
        """How long a connect or a statement is waited for, unless a statement says otherwise."""
        return self._statement_seconds

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    @contextlib.asynccontextmanager
    async def session(self, what: str, *, transaction: bool = False) -> AsyncIterator[Session]:
        """A pooled connection's cursor, in one transaction if asked (committed at the end
        of the block, rolled back on an error); every driver error, the block's too,
        leaves as the domain error of `what`."""
        with domain_errors(what):
            async with self._pool.acquire() as conn:
                async with conn.cursor() as cursor:
                    async with cursor.begin() if transaction else contextlib.nullcontext():
                        yield Session(cursor, self._queries)

    async def fetch(self, name: str, params: dict[str, Any] | None = None) -> list[Row]:
        """Run query `name` alone (its own transaction); its rows."""
        async with self.session(name) as session:
            return await session.fetch(name, params)

    @contextlib.asynccontextmanager
    async def dedicated(self, what: str) -> AsyncIterator[Session]:
        """A connection of its own, outside the pool, for a session that outlives a
        statement (a LISTEN, a session advisory lock): closed at the end of the block,
        which ends the one and releases the other. Errors of connecting leave as domain
        errors; those of the block are the caller's to map (`errors.domain_errors`)."""
        with domain_errors(what):
            conn = await self._pool.connect(enable_hstore=False, timeout=self._statement_seconds)
        try:
            with domain_errors(what):
                cursor = await conn.cursor()
            try:
                yield Session(cursor, self._queries)
            finally:
                cursor.close()
        finally:
            conn.close()
