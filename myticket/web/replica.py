"""Where the read routes read: MYTICKET_READ_DATABASE_URL's standby when it is set, the
service's own repository otherwise. A standby replays the primary's WAL a little later
(usually milliseconds; longer under load or after a network cut), so a ticket just
acknowledged may answer 404 there for that long."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..config import mask_password
from ..db.replica import connect_reader
from ..db.repository import Repository
from .typedefs import REPOSITORY, SETTINGS

log = logging.getLogger(__name__)

READ_REPOSITORY = web.AppKey("read_repository", Repository)


async def read_repository_context(app: web.Application) -> AsyncIterator[None]:
    """After repository_context: the reader's pool, or the writer's."""
    settings = app[SETTINGS]
    if settings.read_database_url is None:
        app[READ_REPOSITORY] = app[REPOSITORY]
        yield
        return
    log.info("reads from %s", mask_password(settings.read_database_url))
    app[READ_REPOSITORY] = await connect_reader(settings.read_database_url,
                                                max_connections=settings.database_pool_size)
    yield
    await app[READ_REPOSITORY].close()
