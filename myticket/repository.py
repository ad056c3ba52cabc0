"""The only module that talks SQL.

Queries live in `sql/*.sql` as named blocks (`-- name: insert_tickets`, then comment
lines that document it, then the statement) and are loaded once. Every method takes
keyword arguments and turns driver errors into the domain errors below, so callers
never see psycopg2. aiopg connections are autocommit: a single statement is its own
transaction, and multi-statement work uses `cursor.begin()`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiopg
import psycopg2

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"

_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached or refused the work; the caller may retry later."""


@dataclass(frozen=True, slots=True)
class IncomingTicket:
    """One delivery as received: what POST /ticket stores before acknowledging."""

    id: str
    received_at: datetime
    content_type: str | None
    body: bytes


def load_queries(sql_dir: Path = SQL_DIR) -> dict[str, str]:
    """Read every `-- name:` block of sql/*.sql; names must be unique."""
    queries: dict[str, str] = {}
    for path in sorted(sql_dir.glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        matches = list(_NAME_LINE.finditer(text))
        for index, match in enumerate(matches):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
            name = match.group("name")
            if name in queries:
                raise ValueError(f"{path.name}: query {name!r} is defined twice")
            queries[name] = text[match.end():end].strip()
    return queries


class Repository:
    """Named queries over an aiopg pool."""

    def __init__(self, pool: aiopg.Pool, queries: dict[str, str]) -> None:
        self._pool = pool
        self._queries = queries

    @classmethod
    async def connect(cls, database_url: str, *, max_connections: int = 10) -> Repository:
        try:
            pool = await aiopg.create_pool(
                database_url,
                minsize=1,
                maxsize=max_connections,
                timeout=10,
                # hstore support costs one query per new connection; we never use it.
                enable_hstore=False,
            )
        except (psycopg2.Error, OSError) as exc:
            raise DatabaseUnavailable(str(exc).strip()) from exc
        return cls(pool, load_queries())

    async def close(self) -> None:
        self._pool.close()
        await self._pool.wait_closed()

    async def _fetch(self, name: str, params: dict[str, Any] | None = None) -> list[tuple]:
        try:
            async with self._pool.acquire() as conn:
                async with conn.cursor() as cur:
                    await cur.execute(self._queries[name], params)
                    if cur.description is None:
                        return []
                    return await cur.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailable(f"{name}: {str(exc).strip() or type(exc).__name__}") from exc

    async def store_tickets(self, *, tickets: Sequence[IncomingTicket]) -> int:
        """Insert a batch in one statement (one commit); return how many rows were new."""
        rows = await self._fetch(
            "insert_tickets",
            {
                "ids": [ticket.id for ticket in tickets],
                "received_at": [ticket.received_at for ticket in tickets],
                "content_types": [ticket.content_type for ticket in tickets],
                "bodies": [ticket.body for ticket in tickets],
            },
        )
        return rows[0][0]

    async def applied_migrations(self) -> set[str]:
        rows = await self._fetch("applied_migrations")
        return {row[0] for row in rows}
