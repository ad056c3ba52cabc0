"""The aiohttp application: its factory, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..intake.budget import ByteBudget
from ..config import Settings, mask_password
from ..core.database_errors import DatabaseUnavailable
from ..core.events import first_of
from ..intake.group_commit import GroupCommitIngest
from ..intake.shares import sender_limit
from ..telemetry.metrics import Metrics
from ..db.migrate import migration_ids, prepare_database
from .replica import read_repository_context
from ..db.repository import Repository
from ..intake.spool import Spool
from ..intake.store import DurableStore
from ..worker.supervision import WorkerProcess
from ..worker.loop import run_worker_loops
from .auth import require_read_access
from .middlewares import log_malformed_requests_in_one_line, observe_and_answer_errors, refuse_malformed_requests
from .routes import setup_routes
from .typedefs import BODY_BUDGET, EXPECTED_MIGRATIONS, INGEST, METRICS, REPOSITORY, SETTINGS, STORE

log = logging.getLogger(__name__)


async def repository_context(app: web.Application) -> AsyncIterator[None]:
    """The connection pool. It connects on first use, so that a service with a spool
    starts, and takes tickets, while PostgreSQL is down."""
    settings = app[SETTINGS]
    assert settings.database_url is not None, "the CLI resolves the database before building the app"
    log.info("using %s", mask_password(settings.database_url))
    app[REPOSITORY] = await Repository.connect(
        settings.database_url, max_connections=settings.database_pool_size, min_connections=0
    )
    yield
    await app[REPOSITORY].close()


async def ingest_context(app: web.Application) -> AsyncIterator[None]:
    """Group commit into PostgreSQL or the spool, and the spool's replayer.

    At start the database is confirmed (migrations applied, identity checked against
    the spool's). When PostgreSQL does not answer and a spool is configured, the
    service starts all the same, in spool mode, and the replayer confirms the database
    once it answers; with no spool the start fails. A spool holding tickets for another
    database fails the start.

    On shutdown: refuse new tickets, wait until every admitted one is committed or
    spooled, stop the replayer between two batches, then close the spool. What is
    still spooled is replayed at the next start: a long replay must not hold up a
    shutdown that has 10 seconds.
    """
    settings = app[SETTINGS]
    metrics = app[METRICS]
    assert settings.database_url is not None
    spool = None
    if settings.spool_max_bytes > 0:
        spool = Spool(
            settings.spool_path, max_bytes=settings.spool_max_bytes, database_url=mask_password(settings.database_url)
        )
        await spool.count()  # opens (or creates) the file now, so a problem shows at start
        if spool.problem:
            log.error("spool %s is not usable: %s", spool.path, spool.problem)
    store = DurableStore(
        app[REPOSITORY], spool, metrics,
        prepare_database=functools.partial(asyncio.to_thread, prepare_database, settings.database_url),
        # A replay batch is one INSERT, like a group-commit batch: the same byte bound.
        replay_batch_max_bytes=settings.batch_max_bytes,
        replay_batch=settings.spool_replay_batch,
    )
    try:
        await store.confirm_database(at_start=True)
    except DatabaseUnavailable as exc:
        if spool is None:
            raise
        log.warning("PostgreSQL does not answer at start (%s): tickets go to the spool %s; migrations and "
                    "replay wait until it answers", exc.reason, spool.path)
    app[STORE] = store
    ingest = GroupCommitIngest(
        store,
        batch_max_size=settings.batch_max_size,
        batch_max_bytes=settings.batch_max_bytes,
        max_waiting=settings.max_waiting_tickets,
        max_flushes_in_flight=settings.flushes_in_flight,
        on_batch_stored=lambda size: metrics.observe(metrics.batch_size, size),
        sender_max_waiting=sender_limit(settings.max_waiting_tickets, settings.sender_share_percent),
        fair_quantum_bytes=settings.max_body_bytes,
    )
    app[INGEST] = ingest
    store.start()
    yield
    await ingest.close()
    await store.close()


async def worker_context(app: web.Application) -> AsyncIterator[None]:
    """The worker loops as tasks of this event loop (MYTICKET_WORKER=inline), once the
    database is confirmed; on shutdown each finishes its batch."""
    stop = asyncio.Event()
    loops = asyncio.create_task(
        run_worker_loops(app[REPOSITORY], app[METRICS], app[SETTINGS], stop, start_when=app[STORE].database_confirmed),
        name="ticket-workers",
    )
    yield
    stop.set()
    await loops


async def worker_process_context(app: web.Application) -> AsyncIterator[None]:
    """The worker in a child process (MYTICKET_WORKER=process), started once the
    database is confirmed. Told to stop as soon as the shutdown begins, so it finishes
    its batch while the HTTP requests drain."""
    worker = WorkerProcess(app[SETTINGS], app[METRICS])
    stop = asyncio.Event()

    async def start_when_confirmed() -> None:
        await first_of(app[STORE].database_confirmed, stop)
        if not stop.is_set():
            worker.start()

    starting = asyncio.create_task(start_when_confirmed(), name="worker-process-start")

    async def request_stop(_app: web.Application) -> None:
        stop.set()
        worker.request_stop()

    app.on_shutdown.append(request_stop)
    yield
    stop.set()
    await starting
    await worker.stop()


async def init_app(settings: Settings) -> web.Application:
    """Build the application; `web.run_app` accepts the coroutine directly."""
    log_malformed_requests_in_one_line()
    app = web.Application(
        # Outermost first: errors raised by the others are answered and counted by the first.
        middlewares=[observe_and_answer_errors, require_read_access, refuse_malformed_requests],
        # The body limit is enforced by the ticket handler (413 before reading past it);
        # aiohttp's own limit is set to the same value for any other handler.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[BODY_BUDGET] = ByteBudget(
        settings.max_pending_bytes,
        sender_limit(settings.max_pending_bytes, settings.sender_share_percent, at_least=settings.max_body_bytes),
    )
    app[EXPECTED_MIGRATIONS] = migration_ids()
    app.cleanup_ctx.append(repository_context)
    app.cleanup_ctx.append(read_repository_context)  # MYTICKET_READ_DATABASE_URL (issue 19)
    app.cleanup_ctx.append(ingest_context)
    if settings.run_worker:
        app.cleanup_ctx.append(worker_context if settings.worker_placement == "inline" else worker_process_context)
    setup_routes(app)
    return app
