"""The aiohttp application: factory, middlewares, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from .budget import ByteBudget
from .config import Settings, mask_password
from .ingest import DurableStore, GroupCommitIngest
from .metrics import Metrics
from .migrate import migration_ids
from .repository import DatabaseUnavailable, Repository
from .spool import Spool
from .routes import RETRY_AFTER_UNAVAILABLE, ApiError, setup_routes
from .server import WorkerProcess
from .typedefs import (
    BODY_BUDGET, EXPECTED_MIGRATIONS, INGEST, METRICS, REPOSITORY, SETTINGS, SPOOL, STORE, TICKET_ID,
)
from .worker import TicketWorker

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe_and_answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON `{"error": ...}` (unexpected ones hide their internals),
    and every request is counted by route, method and final status, and timed.

    One middleware, so the metrics see the status of the JSON error answer itself.
    """
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        response = web.json_response({"error": exc.message}, status=exc.status, headers=exc.headers)
    except DatabaseUnavailable as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        response = web.json_response(
            {"error": "database unavailable"}, status=503, headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {name: value for name, value in exc.headers.items() if name in ("Allow", "Retry-After")}
        response = web.json_response({"error": exc.reason.lower()}, status=exc.status, headers=headers)
    except Exception:
        log.exception(
            "unexpected error on %s %s (ticket %s)", request.method, request.path, request.get(TICKET_ID, "none")
        )
        response = web.json_response({"error": "internal error"}, status=500)
    request.app[METRICS].observe_request(
        route=_route_label(request), method=request.method, status=response.status,
        seconds=time.perf_counter() - started,
    )
    return response


async def repository_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url is not None, "the CLI resolves the database before building the app"
    log.info("connecting to %s", mask_password(settings.database_url))
    app[REPOSITORY] = await Repository.connect(settings.database_url)
    yield
    await app[REPOSITORY].close()


async def ingest_context(app: web.Application) -> AsyncIterator[None]:
    """Group commit into PostgreSQL or the spool, and the spool's replayer.

    On shutdown: refuse new tickets, wait until every admitted one is committed or
    spooled, stop the replayer between two batches, then close the spool. What is
    still spooled is replayed at the next start: a long replay must not hold up a
    shutdown that has 10 seconds.
    """
    settings = app[SETTINGS]
    metrics = app[METRICS]
    spool = None
    if settings.spool_max_bytes > 0:
        spool = Spool(settings.spool_path, max_bytes=settings.spool_max_bytes)
        await spool.count()  # opens (or creates) the file now, so a problem shows at start
        if spool.problem:
            log.error("spool %s is not usable: %s", spool.path, spool.problem)
    store = DurableStore(app[REPOSITORY], spool, metrics)
    app[STORE] = store
    app[SPOOL] = spool
    ingest = GroupCommitIngest(
        store,
        batch_max_size=settings.batch_max_size,
        batch_max_bytes=settings.batch_max_bytes,
        max_waiting=settings.max_waiting_tickets,
        max_flushes_in_flight=settings.flushes_in_flight,
        on_batch_stored=lambda size: metrics.observe(metrics.batch_size, size),
    )
    app[INGEST] = ingest
    stop_replay = asyncio.Event()
    replayer = asyncio.create_task(store.replay_forever(stop_replay), name="spool-replayer")
    yield
    await ingest.close()
    stop_replay.set()
    await replayer
    if spool is not None:
        await spool.close()


async def worker_context(app: web.Application) -> AsyncIterator[None]:
    """Ticket worker loops as background tasks; on shutdown each finishes its batch."""
    workers = [TicketWorker(app[REPOSITORY], app[METRICS]) for _ in range(app[SETTINGS].workers)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop), name=f"ticket-worker-{n}") for n, worker in enumerate(workers)]
    yield
    stop.set()
    await asyncio.gather(*tasks)


async def worker_process_context(app: web.Application) -> AsyncIterator[None]:
    """The worker in a child process (MYTICKET_WORKER=process). Told to stop as soon as
    the shutdown begins, so it finishes its batch while the HTTP requests drain."""
    worker = WorkerProcess(app[SETTINGS], app[METRICS])
    worker.start()

    async def request_stop(_app: web.Application) -> None:
        worker.request_stop()

    app.on_shutdown.append(request_stop)
    yield
    await worker.stop()


async def init_app(settings: Settings) -> web.Application:
    """Build the application; `web.run_app` accepts the coroutine directly."""
    app = web.Application(
        middlewares=[observe_and_answer_errors],
        # The body limit is enforced by the ticket handler (413 before reading past it);
        # aiohttp's own limit is set to the same value for any other handler.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[BODY_BUDGET] = ByteBudget(settings.max_pending_bytes)
    app[EXPECTED_MIGRATIONS] = migration_ids()
    app.cleanup_ctx.append(repository_context)
    app.cleanup_ctx.append(ingest_context)
    if settings.run_worker:
        app.cleanup_ctx.append(worker_context if settings.worker_placement == "inline" else worker_process_context)
    setup_routes(app)
    return app
