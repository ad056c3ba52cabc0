"""The aiohttp application: factory, middlewares, and one cleanup context per resource."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..intake.budget import ByteBudget
from ..config import Settings, mask_password
from ..core.database_errors import DatabaseUnavailable
from ..core.events import first_of
from ..intake.group_commit import GroupCommitIngest
from ..telemetry.metrics import Metrics, RefusalReason
from ..db.migrate import migration_ids, prepare_database
from ..db.repository import Repository
from ..intake.spool import Spool
from ..intake.store import DurableStore
from ..worker.supervision import WorkerProcess
from ..worker.loop import run_worker_loops
from .auth import require_read_access
from .errors import RETRY_AFTER_UNAVAILABLE, ApiError
from .routes import setup_routes
from .text import printable
from .typedefs import BODY_BUDGET, EXPECTED_MIGRATIONS, INGEST, METRICS, REPOSITORY, SETTINGS, STORE, TICKET_ID

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


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


def unsupported_transfer_coding(headers: Iterable[str]) -> str | None:
    """A transfer coding other than chunked (gzip, deflate…), else None. aiohttp only
    de-chunks: a body sent `gzip, chunked` would be stored still compressed."""
    codings = [coding.strip().lower() for header in headers for coding in header.split(",")]
    if all(coding in ("", "chunked", "identity") for coding in codings):
        return None
    return ", ".join(codings)


class MalformedRequestsInOneLine(logging.Filter):
    """aiohttp refuses a request its HTTP parser cannot read (a negative Content-Length,
    a bad chunk size…) with its own 400, and logs it as an ERROR with a traceback: a
    client's error, which any sender could use to flood the log and fire alerts. This
    filter makes each such record the one INFO line every other client error gets."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, HttpProcessingError) and 400 <= (failure.code or 400) < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "%d on a malformed HTTP request from %s: %s", (
                failure.code or 400, remote, printable(str(failure.message), 200),
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


def log_malformed_requests_in_one_line() -> None:
    """Install the filter on aiohttp's server logger, once per process."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequestsInOneLine) for existing in server_log.filters):
        server_log.addFilter(MalformedRequestsInOneLine())


@web.middleware
async def refuse_malformed_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in the path or query of a route, 501 for a transfer coding other
    than chunked, 415 for an encoded body, before any
    handler reads the body or takes a value to the database. (A path that matches no
    route is a 404 whatever it contains.)"""
    if request.match_info.route.resource is not None:
        where = nul_character_in(request.path, request.query.items())
        if where is not None:
            raise ApiError(400, f"NUL character in {where}")
    transfer_coding = unsupported_transfer_coding(request.headers.getall("Transfer-Encoding", []))
    if transfer_coding is not None:
        raise ApiError(
            501, f"Transfer-Encoding {printable(transfer_coding, 40)!r} is not supported: send the body plain or chunked"
        )
    if request.body_exists:
        # Every Content-Encoding header counts: a second one must not slip an encoding past.
        coding = unsupported_content_encoding(", ".join(request.headers.getall("Content-Encoding", [])) or None)
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
    app[BODY_BUDGET] = ByteBudget(settings.max_pending_bytes)
    app[EXPECTED_MIGRATIONS] = migration_ids()
    app.cleanup_ctx.append(repository_context)
    app.cleanup_ctx.append(ingest_context)
    if settings.run_worker:
        app.cleanup_ctx.append(worker_context if settings.worker_placement == "inline" else worker_process_context)
    setup_routes(app)
    return app
