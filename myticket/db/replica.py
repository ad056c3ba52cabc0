"""A repository for reads on a standby (MYTICKET_READ_DATABASE_URL).

Its pool honours the URL's target_session_attrs as libpq would ("any" when silent, so a
single standby's URL works; `prefer-standby` over a host list keeps reads on a standby
while one answers and falls back to the primary), and, like the writer's, chooses its
host again when the one in use fails.
"""

from __future__ import annotations

from .connector import Connector
from .failover import create_host_pool
from .repository import DEFAULT_POOL_SIZE, DEFAULT_STATEMENT_SECONDS, Repository
from .resources import load_queries


async def connect_reader(database_url: str, *, max_connections: int = DEFAULT_POOL_SIZE) -> Repository:
    """A repository that connects on first use (a standby down at start is no reason to
    refuse tickets); its read methods are the only ones to call."""
    pool = await create_host_pool(
        database_url, minsize=0, maxsize=max_connections, timeout=DEFAULT_STATEMENT_SECONDS, enable_hstore=False
    )
    return Repository(Connector(pool, load_queries(), database_url, statement_seconds=DEFAULT_STATEMENT_SECONDS))
