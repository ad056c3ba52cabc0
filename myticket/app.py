"""The aiohttp application: factory, middlewares, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import web

from .auth import require_read_access
from .config import Settings, mask_password
from .ingest import DurableStore, GroupCommitIngest
from .metrics import Metrics, RefusalReason
from .migrate import migration_ids
from .repository import DatabaseUnavailable, Repository
from .spool import Spool
from .routes import RETRY_AFTER_UNAVAILABLE, ApiError, setup_routes
from .server import WorkerProcess
from .typedefs import EXPECTED_MIGRATIONS, INGEST, METRICS, REPOSITORY, SETTINGS, SPOOL, STORE, TICKET_ID
from .worker import TicketWorker

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def printable(text: str, limit: int = 200) -> str:
    """`text` for a log line: control characters escaped (a NUL or a newline from a
    client cannot forge or cut a line), and at most `limit` characters."""
    shown = text if text.isprintable() else text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return shown if len(shown) <= limit else shown[:limit] + "…"


def log_client_error(request: web.Request, status: int, message: str) -> None:
    """One line per refused request, without traceback: the client's mistake, not ours."""
    log.info(
        "%d on %s %s from %s: %s", status, request.method, printable(request.raw_path), request.remote, printable(message)
    )


@web.middleware
async def observe_and_answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON `{"error": ...}` (unexpected ones hide their internals),
    a client's error is logged in one line, and every request is counted by route,
    method and final status, and timed.

    One middleware, so the metrics see the status of the JSON error answer itself.
    """
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.status < 500:
            log_client_error(request, exc.status, exc.message)
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
        if exc.status < 500:
            log_client_error(request, exc.status, exc.reason)
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


def nul_character_in(path: str, query: Iterable[tuple[str, str]]) -> str | None:
    """Where a NUL character is in the decoded path or query, else None.

    No stored text can contain one (PostgreSQL refuses NUL in text), so such a request
    is malformed, not a lookup that finds nothing.
    """
    if "\x00" in path:
        return "the path"
    for name, value in query:
        if "\x00" in name or "\x00" in value:
            return f"query parameter {printable(name)!r}"
    return None


def unsupported_content_encoding(content_encoding: str | None) -> str | None:
    """The Content-Encoding a body may not carry, or None for none or `identity`.

    A ticket is stored as the exact bytes received and its signature is over those
    bytes: decoding it on the way in would store and check something else, so an
    encoded body is refused (415) and the sender sends it plain.
    """
    if content_encoding is None:
        return None
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    if all(coding in ("", "identity") for coding in codings):
        return None
    return content_encoding.strip()


@web.middleware
async def refuse_malformed_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in the path or query of a route, 415 for an encoded body, before any
    handler reads the body or takes a value to the database. (A path that matches no
    route is a 404 whatever it contains.)"""
    if request.match_info.route.resource is not None:
        where = nul_character_in(request.path, request.query.items())
        if where is not None:
            raise ApiError(400, f"NUL character in {where}")
    if request.body_exists:
        coding = unsupported_content_encoding(request.headers.get("Content-Encoding"))
        if coding is not None:
            if request.method == "POST" and _route_label(request) == "/ticket":
                request.app[METRICS].refuse(RefusalReason.UNSUPPORTED_ENCODING)
            raise ApiError(
                415,
                f"Content-Encoding {printable(coding, 40)!r} is not accepted: send the body unencoded "
                "(the exact bytes received are stored and signed)",
            )
    return await handler(request)


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
        # Outermost first: errors raised by the others are answered and counted by the first.
        middlewares=[observe_and_answer_errors, require_read_access, refuse_malformed_requests],
        # The body limit is enforced by the ticket handler (413 before reading past it);
        # aiohttp's own limit is set to the same value for any other handler.
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[EXPECTED_MIGRATIONS] = migration_ids()
    app.cleanup_ctx.append(repository_context)
    app.cleanup_ctx.append(ingest_context)
    if settings.run_worker:
        app.cleanup_ctx.append(worker_context if settings.worker_placement == "inline" else worker_process_context)
    setup_routes(app)
    return app
