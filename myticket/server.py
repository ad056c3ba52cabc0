"""The service's processes: HTTP servers (one, or N sharing one port) and the worker.

With N > 1 each HTTP process is started with `spawn` (no event loop or connection is
inherited) and binds the port with SO_REUSEPORT, so the kernel spreads connections
between them. The parent forwards SIGTERM and SIGINT to every child, waits for their
graceful shutdown, and stops them all if one dies, so that a supervisor sees the
failure and restarts the service.

The ticket worker belongs to HTTP process 0. By default it runs in a child process of
its own (`WorkerProcess`), so that parsing and writing outcomes use another core than
the HTTP event loop; with MYTICKET_WORKER=inline it runs as tasks in that event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection

from .config import Settings
from .metrics import Metrics

log = logging.getLogger(__name__)

# Seconds that run_app waits for in-flight requests on SIGTERM before cancelling them.
SHUTDOWN_TIMEOUT_SECONDS = 8
# How long the parent waits for children after forwarding a stop signal.
CHILD_STOP_SECONDS = SHUTDOWN_TIMEOUT_SECONDS + 5
# How often a worker process sends its metric tallies to its HTTP process.
WORKER_REPORT_SECONDS = 1.0
# Pause before a worker process that died is started again; it doubles with each death
# that follows a short life (a worker that cannot start must not fill the log every
# second), up to the maximum.
WORKER_RESTART_SECONDS = 1.0
WORKER_RESTART_MAX_SECONDS = 30.0
WORKER_SHORT_LIFE_SECONDS = 60.0


# Options of aiohttp's HTTP server, the same for the service and the tests.
# auto_decompress=False: a body with a Content-Encoding is left as received, so the
# middleware refuses it (415) instead of aiohttp decoding it first (a ticket is stored
# and signed as the bytes received; a body that is not what its header says used to
# end in a 500, and a small compressed body can decode to a large one).
HTTP_SERVER_OPTIONS: dict[str, object] = {"auto_decompress": False}


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


def set_process_title(role: str) -> None:
    """Name this process in ps/top (`myticket: worker`), so an operator sees which is which."""
    import setproctitle

    setproctitle.setproctitle(f"myticket: {role}")


def serve(
    settings: Settings,
    *,
    reuse_port: bool = False,
    process_index: int = 0,
    sockets: list[socket.socket] | None = None,
) -> None:
    """Serve in this process until SIGTERM or SIGINT, on `sockets` when given (bound
    beforehand by the caller), else on HTTP_HOST:HTTP_PORT."""
    from aiohttp import web

    from . import loop_errors
    from .app import init_app

    loop = asyncio.new_event_loop()
    # Out of file descriptors, asyncio reports every failed accept: one line a second.
    loop_errors.install(loop)
    web.run_app(
        init_app(settings),
        loop=loop,
        host=None if sockets else settings.http_host,
        port=None if sockets else settings.http_port,
        sock=sockets or None,
        reuse_port=None if sockets else reuse_port,
        # aiohttp closes a connection that has not sent a complete request head within
        # keepalive_timeout: this is also the header read timeout for slow senders.
        keepalive_timeout=settings.read_timeout_seconds,
        access_log=None,  # no per-request log line on the hot path; see /metrics
        shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        print=lambda message: log.info("process %d: %s", process_index, message.strip()),
        **HTTP_SERVER_OPTIONS,
    )


def _child(settings: Settings, process_index: int, parent_pid: int) -> None:
    from .config import configure_logging

    configure_logging(settings.log_level)
    _stop_when_parent_dies(parent_pid)
    set_process_title(f"http {process_index}")
    serve(settings, reuse_port=True, process_index=process_index)


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
    children = []
    for index in range(processes):
        child_settings = dataclasses.replace(settings, run_worker=settings.run_worker and index == 0)
        child = context.Process(
            target=_child, args=(child_settings, index, os.getpid()), name=f"myticket-http-{index}"
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
    failed = [child for child in children if child.exitcode not in (0, -signal.SIGTERM)]
    return 0 if stopping and not failed else 1



async def run_worker_loops(
    settings: Settings,
    *,
    stop_signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    reports: Connection | None = None,
) -> None:
    """The ticket worker without HTTP, until a stop signal: `myticket worker`, and the
    worker process of `serve`, which sends its metrics through `reports`."""
    from .repository import Repository
    from .worker import TicketWorker

    assert settings.database_url is not None
    # No connection at start: a worker (re)started while PostgreSQL is down waits for it,
    # logging the outage once, instead of exiting and being restarted again and again.
    repository = await Repository.connect(settings.database_url, min_connections=0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in stop_signals:
        loop.add_signal_handler(signal_number, stop.set)
    metrics = Metrics()
    reporter = asyncio.create_task(_send_reports(metrics, reports, stop)) if reports is not None else None
    try:
        log.info("worker started (%d loops, process %d)", settings.workers, os.getpid())
        workers = [
            TicketWorker(repository, metrics, batch_max_bytes=settings.worker_batch_max_bytes)
            for _ in range(settings.workers)
        ]
        await asyncio.gather(*(worker.run(stop) for worker in workers))
        log.info("worker stopped")
    finally:
        stop.set()
        if reporter is not None:
            await reporter
        await repository.close()


async def _send_reports(metrics: Metrics, reports: Connection, stop: asyncio.Event) -> None:
    """Send the tallies every WORKER_REPORT_SECONDS, and once more when stopping."""
    while True:
        try:
            await asyncio.wait_for(stop.wait(), timeout=WORKER_REPORT_SECONDS)
        except TimeoutError:
            pass
        try:
            reports.send(metrics.take_report())
        except OSError:  # the HTTP process is gone: nobody to report to
            return
        if stop.is_set():
            return


def _worker_child(settings: Settings, reports: Connection, parent_pid: int) -> None:
    """Entry point of the worker process (spawned by `WorkerProcess`)."""
    from .config import configure_logging

    configure_logging(settings.log_level)
    _stop_when_parent_dies(parent_pid)
    set_process_title("worker")
    # Ctrl-C reaches the whole process group; the HTTP process decides when this
    # process stops (SIGTERM), after its own requests are answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(run_worker_loops(settings, stop_signals=(signal.SIGTERM,), reports=reports))


def _stop_when_parent_dies(parent_pid: int) -> None:
    """Ask Linux for SIGTERM when the parent dies, even by SIGKILL: no orphaned worker."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the worker outlives a killed parent
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def restart_delay(short_lives: int) -> float:
    """Seconds before restarting a worker that died after `short_lives` short lives in a row."""
    return min(WORKER_RESTART_MAX_SECONDS, WORKER_RESTART_SECONDS * 2 ** max(0, short_lives - 1))


class WorkerProcess:
    """The ticket worker in a child process of an HTTP process, started, watched and
    stopped from that process's event loop.

    Its metric tallies arrive through a pipe and are merged into this process's
    metrics, so one /metrics shows both (a worker killed with SIGKILL loses at most its
    last second of counts). A worker process that dies is started again after
    `restart_delay`: tickets stay pending in PostgreSQL meanwhile, and intake goes on.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._context = multiprocessing.get_context("spawn")
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reports: Connection | None = None
        self._stopping = False
        self._restart: asyncio.TimerHandle | None = None
        self._started_at = 0.0
        self._short_lives = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        reports, child_end = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_child, args=(self._settings, child_end, os.getpid()), name="myticket-worker"
        )
        process.start()
        child_end.close()
        self._process, self._reports = process, reports
        self._started_at = time.monotonic()
        loop.add_reader(reports.fileno(), self._receive_reports)
        loop.add_reader(process.sentinel, self._on_exit)
        log.info("worker process %d started", process.pid)

    def _receive_reports(self) -> None:
        assert self._reports is not None
        try:
            while self._reports.poll():
                self._metrics.merge_report(self._reports.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self._reports.fileno())

    def _on_exit(self) -> None:
        assert self._process is not None and self._reports is not None
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._process.sentinel)
        self._process.join()
        self._receive_reports()
        loop.remove_reader(self._reports.fileno())
        self._reports.close()
        if self._stopping:
            return
        short_life = time.monotonic() - self._started_at < WORKER_SHORT_LIFE_SECONDS
        self._short_lives = self._short_lives + 1 if short_life else 0
        delay = restart_delay(self._short_lives)
        log.error(
            "worker process %d exited with code %s; starting another in %g s",
            self._process.pid, self._process.exitcode, delay,
        )
        self._restart = loop.call_later(delay, self.start)

    def request_stop(self) -> None:
        """SIGTERM: the worker finishes its current batch and exits."""
        self._stopping = True
        if self._restart is not None:
            self._restart.cancel()
        if self._process is not None and self._process.is_alive():
            self._process.terminate()

    async def stop(self) -> None:
        """Stop the worker process and wait for it (killed after CHILD_STOP_SECONDS)."""
        self.request_stop()
        process = self._process
        if process is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, process.join, CHILD_STOP_SECONDS)
        if process.is_alive():
            log.error("worker process %d did not stop in time; killing it", process.pid)
            process.kill()
            await loop.run_in_executor(None, process.join)
        if self._reports is not None and not self._reports.closed:
            self._on_exit()
        log.info("worker process %d stopped (exit code %s)", process.pid, process.exitcode)
