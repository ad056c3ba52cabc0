"""/ready's `synchronous_standby` field and the myticket_database_synchronous_standby
gauge: whether an acknowledgement from PostgreSQL now also means "on a standby"."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.database_errors import DatabaseUnavailable
from ..db.durability import read_synchronous_replication
from .typedefs import METRICS, REPOSITORY


async def synchronous_standby_field(app: web.Application) -> dict[str, Any] | None:
    """The field for /ready (None when the database does not answer); sets the gauge
    when the state could be read."""
    try:
        state = await read_synchronous_replication(app[REPOSITORY])
    except DatabaseUnavailable:
        return None
    if state.waits is not None:
        app[METRICS].set_synchronous_standby(state.waits)
    return state.as_json()
