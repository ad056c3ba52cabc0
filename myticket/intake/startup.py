"""What `serve` checks before it takes a ticket: the database migrated, and the spool
belonging to this database, or the service refuses to start."""

from __future__ import annotations

import logging

from ..config import Settings, mask_password
from ..core.database_errors import DatabaseUnavailable
from ..db.migrate import prepare_database
from .spool import SpoolUnavailable, claim_now
from .spool_ownership import ForeignSpool

log = logging.getLogger(__name__)


def prepare_to_serve(settings: Settings) -> None:
    """Migrate and check the spool before serving; raise when the service must not start.

    PostgreSQL down at start is not a reason when a spool is configured: the service
    takes tickets into it, and applies the migrations and replays once PostgreSQL
    answers. Without a spool it is (DatabaseUnavailable). A spool that holds tickets for
    another database is (ForeignSpool, one line): they would never be replayed here.
    """
    assert settings.database_url is not None
    try:
        identity = prepare_database(settings.database_url)
    except DatabaseUnavailable as exc:
        if settings.spool_max_bytes == 0:
            raise
        log.warning(
            "PostgreSQL does not answer (%s): serving anyway; tickets go to the spool in %s, and the migrations "
            "and the replay wait until PostgreSQL answers", exc.reason, settings.spool_path,
        )
        identity = None
    if settings.spool_max_bytes == 0:
        return
    try:
        foreign = claim_now(
            settings.spool_path, max_bytes=settings.spool_max_bytes,
            database_url=mask_password(settings.database_url), identity=identity,
        )
    except SpoolUnavailable as exc:  # reported by /ready; PostgreSQL takes the tickets meanwhile
        log.error("%s", exc)
        return
    if foreign is None:
        return
    if identity is None:
        log.warning("%s: the spool is not used until PostgreSQL answers and shows it is that database", foreign)
        return
    raise ForeignSpool(
        f"{foreign}: refusing to start. Start a service with that database's DATABASE_URL to replay them, "
        "or give this one another MYTICKET_SPOOL_DIR"
    )
