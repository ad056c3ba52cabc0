"""The HTTP processes: one server, or N sharing one port, and their supervisor.

With N > 1 each HTTP process is started with `spawn` (no event loop or connection is
inherited) and binds the port with SO_REUSEPORT, so the kernel spreads connections
between them. The parent forwards SIGTERM and SIGINT to every child, waits for their
graceful shutdown, and stops them all if one dies, so that a supervisor sees the
failure and restarts the service.

The ticket worker belongs to HTTP process 0 (see `supervision` for its process).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path

from ..config import Settings, default_max_connections
from ..worker.supervision import CHILD_STOP_SECONDS, SHUTDOWN_TIMEOUT_SECONDS, set_process_title, stop_when_parent_dies

log = logging.getLogger(__name__)


# Options of aiohttp's HTTP server, the same for the service and the tests.
# auto_decompress=False: a body with a Content-Encoding is left as received, so the
# middleware refuses it (415) instead of aiohttp decoding it first (a ticket is stored
# and signed as the bytes received; a body that is not what its header says used to
# end in a 500, and a small compressed body can decode to a large one).
#
# The request head is held in memory until it is complete, outside the body budget: its
# bound is set here on purpose. A line (the request line, or one header) of at most
# 8 KB, as most proxies allow; at most 32 headers (a ticket POST carries about ten, a
# proxy adds a few): one connection's head holds at most 32 × 8 KB, twice (raw and
# decoded), about 0.5 MB, and a sender's connections (MYTICKET_MAX_CONNECTIONS_PER_SENDER,
# 256) about 130 MB. A head past these is answered 400 and its connection closed.
MAX_HEAD_LINE_BYTES = 8190
MAX_HEADERS = 32
# An answer given before the body was read (408 to a slow body, 413, 429) is followed by
# aiohttp reading and dropping what the sender still sends, so that it reads the answer
# instead of a reset: for 1 s, not aiohttp's 10 s, during which a slow sender's
# connection would still count against its cap (a trial saw 408 at 5 s, close at 15 s).
LINGERING_SECONDS = 1.0
HTTP_SERVER_OPTIONS: dict[str, object] = {
    "auto_decompress": False,
    "lingering_time": LINGERING_SECONDS,
    "max_line_size": MAX_HEAD_LINE_BYTES,
    "max_field_size": MAX_HEAD_LINE_BYTES,
    "max_headers": MAX_HEADERS,
}


class ListenError(Exception):
    """The HTTP address cannot be listened on; the message is one line naming why."""


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """Bound sockets for every address `host` resolves to, or ListenError.

    `serve` binds before any other side effect (starting PostgreSQL, migrating, a
    worker), so that a port in use or a bad HTTP_HOST changes nothing.
    """
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"HTTP_HOST: cannot resolve {host!r} ({exc.strerror})") from None
    sockets: list[socket.socket] = []
    bound: set[tuple] = set()
    try:
        for family, kind, protocol, _name, address in addresses:
            if address in bound:
                continue
            bound.add(address)
            sock = socket.socket(family, kind, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise ListenError(
            f"cannot listen on HTTP_HOST={host} HTTP_PORT={port}: {exc.strerror or exc}"
        ) from None
    return sockets


def connection_limits(settings: Settings):  # -> connections.ConnectionLimits
    """The caps on this process's open connections: MYTICKET_MAX_CONNECTIONS, or the soft
    RLIMIT_NOFILE less a reserve; and per sender, never above the process's cap."""
    import resource

    from .connections import ConnectionLimits

    total = settings.max_connections
    if total is None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        total = default_max_connections(soft, settings.database_pool_size) if soft != resource.RLIM_INFINITY else 65536
    return ConnectionLimits(
        total=total, per_sender=min(total, settings.max_connections_per_sender), trusted_proxies=settings.trusted_proxies
    )


def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    process_index: int = 0,
    sockets: list[socket.socket] | None = None,
    metrics_dir: Path | None = None,
) -> None:
    """Serve in this process until SIGTERM or SIGINT, on `sockets` when given (bound
    beforehand by the caller), else on HTTP_HOST:HTTP_PORT.

    What aiohttp's run_app does, with a runner of our own (GatedAppRunner) so that each
    connection passes the connection caps before aiohttp sees it."""
    from aiohttp import web

    from ..telemetry import loop_errors
    from .access_log import AccessLogger, access_logger
    from .app import init_app
    from .metrics_share import with_shared_metrics
    from .connections import GatedAppRunner

    loop = asyncio.new_event_loop()
    # Out of file descriptors, asyncio reports every failed accept: one line a second.
    loop_errors.install(loop)
    limits = connection_limits(settings)
    log.info(
        "process %d: at most %d connections, %d per sender", process_index, limits.total, limits.per_sender
    )

    async def run() -> None:
        app = init_app(settings)
        if metrics_dir is not None:  # several processes: every scrape shows the whole service
            app = with_shared_metrics(app, metrics_dir, process_index)
        runner = GatedAppRunner(
            await app,
            limits=limits,
            handle_signals=True,
            # aiohttp closes a connection that has not sent a complete request head within
            # keepalive_timeout: this is also the header read timeout for slow senders.
            keepalive_timeout=settings.read_timeout_seconds,
            # Off unless MYTICKET_ACCESS_LOG=1: no per-request log line on the hot path; see /metrics.
            access_log=access_logger() if settings.access_log else None, access_log_class=AccessLogger,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
            **HTTP_SERVER_OPTIONS,
        )
        await runner.setup()
        try:
            if sockets:
                sites = [web.SockSite(runner, sock) for sock in sockets]
            else:
                sites = [web.TCPSite(runner, settings.http_host, settings.http_port, reuse_port=reuse_port)]
            for site in sites:
                await site.start()
            # The line aiohttp's run_app prints, as before this runner of our own.
            names = ", ".join(sorted(str(site.name) for site in runner.sites))
            log.info("process %d: ======== Running on %s ========\n(Press CTRL+C to quit)", process_index, names)
            await asyncio.Event().wait()  # until SIGTERM or SIGINT raise GracefulExit
        finally:
            await runner.cleanup()

    main = loop.create_task(run())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            _cancel_remaining_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_remaining_tasks(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _child(settings: Settings, process_index: int, parent_pid: int, metrics_dir: Path | None = None) -> None:
    from ..telemetry.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    stop_when_parent_dies(parent_pid)
    set_process_title(f"http {process_index}")
    serve(settings, reuse_port=True, process_index=process_index, metrics_dir=metrics_dir)


def serve_processes(settings: Settings, processes: int, sockets: list[socket.socket]) -> int:
    """Run `processes` server processes on one port; return the exit code.

    `sockets` were bound by the caller before anything else happened. One process
    serves on them; several close them and each binds the port with SO_REUSEPORT.
    """
    if processes == 1:
        set_process_title("serve")
        serve(settings, sockets=sockets)
        return 0
    for sock in sockets:
        sock.close()
    set_process_title(f"serve (supervisor of {processes} http processes)")
    context = multiprocessing.get_context("spawn")
    metrics_dir = Path(tempfile.mkdtemp(prefix="myticket-metrics-"))  # see telemetry.shared_metrics
    children = []
    for index in range(processes):
        child_settings = dataclasses.replace(settings, run_worker=settings.run_worker and index == 0)
        child = context.Process(
            target=_child, args=(child_settings, index, os.getpid(), metrics_dir), name=f"myticket-http-{index}"
        )
        child.start()
        children.append(child)
    log.info("started %d server processes on port %d (worker in process 0)", processes, settings.http_port)

    stopping = False

    def forward(signal_number: int, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: the child drains in-flight tickets, then exits 0

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping and all(child.is_alive() for child in children):
            children[0].join(timeout=0.5)
        if not stopping:
            dead = [child.name for child in children if not child.is_alive()]
            log.error("server process %s exited; stopping the others", ", ".join(dead))
            for child in children:
                if child.is_alive():
                    child.terminate()
        deadline = time.monotonic() + CHILD_STOP_SECONDS
        for child in children:
            child.join(timeout=max(0.0, deadline - time.monotonic()))
            if child.is_alive():
                log.error("%s did not stop in time; killing it", child.name)
                child.kill()
                child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [child for child in children if child.exitcode not in (0, -signal.SIGTERM)]
    return 0 if stopping and not failed else 1
