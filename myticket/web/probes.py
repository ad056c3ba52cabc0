"""The probes: liveness, readiness (can a ticket be stored durably now?) and metrics.
Open to all (see auth.PUBLIC_ROUTES): load balancers and scrapers carry no token."""

from __future__ import annotations

from aiohttp import web

from ..core.database_errors import DatabaseUnavailable
from ..core.readiness import readiness
from .durability import synchronous_standby_field
from .errors import RETRY_AFTER_UNAVAILABLE, ApiError
from .typedefs import EXPECTED_MIGRATIONS, METRICS, REPOSITORY, STORE


async def ping(request: web.Request) -> web.Response:
    """Liveness: answers without touching the database."""
    return web.Response(text="pong")


async def ready(request: web.Request) -> web.Response:
    """Readiness: tickets can be stored durably now.

    200 `ready` when the database answers and every shipped migration is applied;
    200 `spooling` when the database does not answer (or is not confirmed yet: it has
    not answered since the start) but the spool takes tickets (the next ticket goes to
    the spool, so `spool.mode` is true); 503 when neither can store a ticket. The
    database's failure is given as a short reason: driver text spans lines and names
    the database's host and port. A database that answers reads but refused the last
    write (a full disk, read-only) counts as unavailable while that refusal stands.
    """
    app = request.app
    store = app[STORE]
    spool_state = await store.spool_state()
    database_problem = None if store.database_confirmed.is_set() else store.database_problem or "not confirmed"
    missing: list[str] = []
    if database_problem is None:
        try:
            missing = sorted(app[EXPECTED_MIGRATIONS] - await app[REPOSITORY].applied_migrations())
        except DatabaseUnavailable as exc:
            database_problem = f"unavailable: {exc.reason}"
    status, body = readiness(
        database_problem=database_problem, missing_migrations=missing, spool=spool_state,
        spool_max_bytes=store.spool.max_bytes if store.spool is not None else 0,
        database_refused_writes=store.database_refused_writes(),
    )
    if status == 200 and database_problem is None:  # durability across machines (issue 19)
        body["synchronous_standby"] = await synchronous_standby_field(app)
    if status != 200:
        raise ApiError(status, body["error"], retry_after=RETRY_AFTER_UNAVAILABLE)
    return web.json_response(body)


async def metrics(request: web.Request) -> web.Response:
    """The app's metrics, in the exposition format the scraper's Accept header asks for."""
    body, headers = request.app[METRICS].render(request.headers.getall("Accept", []))
    return web.Response(body=body, headers=headers)
