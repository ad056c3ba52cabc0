"""Running the HTTP server: one process, or N processes sharing one port.

With N > 1 each process is started with `spawn` (no event loop or connection is
inherited) and binds the port with SO_REUSEPORT, so the kernel spreads connections
between them. The ticket worker runs in process 0 only. The parent forwards SIGTERM
and SIGINT to every child, waits for their graceful shutdown, and stops them all if
one dies, so that a supervisor sees the failure and restarts the service.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import signal
import time

from .config import Settings

log = logging.getLogger(__name__)

# Seconds that run_app waits for in-flight requests on SIGTERM before cancelling them.
SHUTDOWN_TIMEOUT_SECONDS = 8
# How long the parent waits for children after forwarding a stop signal.
CHILD_STOP_SECONDS = SHUTDOWN_TIMEOUT_SECONDS + 5


def serve(settings: Settings, *, reuse_port: bool = False, process_index: int = 0) -> None:
    """Serve in this process until SIGTERM or SIGINT."""
    from aiohttp import web

    from .app import init_app

    web.run_app(
        init_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        reuse_port=reuse_port,
        # aiohttp closes a connection that has not sent a complete request head within
        # keepalive_timeout: this is also the header read timeout for slow senders.
        keepalive_timeout=settings.read_timeout_seconds,
        access_log=None,  # no per-request log line on the hot path; see /metrics
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        print=lambda message: log.info("process %d: %s", process_index, message.strip()),
    )


def _child(settings: Settings, process_index: int) -> None:
    from .config import configure_logging

    configure_logging(settings.log_level)
    serve(settings, reuse_port=True, process_index=process_index)


def serve_processes(settings: Settings, processes: int) -> int:
    """Run `processes` server processes on one port; return the exit code."""
    if processes == 1:
        serve(settings)
        return 0
    context = multiprocessing.get_context("spawn")
    children = []
    for index in range(processes):
        child_settings = dataclasses.replace(settings, run_worker=settings.run_worker and index == 0)
        child = context.Process(target=_child, args=(child_settings, index), name=f"myticket-http-{index}")
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
    failed = [child for child in children if child.exitcode not in (0, -signal.SIGTERM)]
    return 0 if stopping and not failed else 1

