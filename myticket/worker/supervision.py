"""The worker's processes: one lifecycle for the worker wherever it runs.

`run_worker_process` is the worker without HTTP: the standalone `myticket worker`, and
the worker process of `serve`, which sends its metric tallies to its HTTP process.
`WorkerProcess` starts, watches and restarts that child process from the HTTP
process's event loop. Both run the same `worker.run_worker_loops` that the inline
placement runs as tasks; nothing here imports the web layer.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection

from ..config import Settings
from ..telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# Seconds that run_app waits for in-flight requests on SIGTERM before cancelling them.
SHUTDOWN_TIMEOUT_SECONDS = 8
# How long a parent waits for children after forwarding a stop signal.
CHILD_STOP_SECONDS = SHUTDOWN_TIMEOUT_SECONDS + 5
# How often a worker process sends its metric tallies to its HTTP process.
WORKER_REPORT_SECONDS = 1.0
# Pause before a worker process that died is started again; it doubles with each death
# that follows a short life (a worker that cannot start must not fill the log every
# second), up to the maximum.
WORKER_RESTART_SECONDS = 1.0
WORKER_RESTART_MAX_SECONDS = 30.0
WORKER_SHORT_LIFE_SECONDS = 60.0


def set_process_title(role: str) -> None:
    """Name this process in ps/top (`myticket: worker`), so an operator sees which is which."""
    import setproctitle

    setproctitle.setproctitle(f"myticket: {role}")


async def run_worker_process(
    settings: Settings,
    *,
    stop_signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
    reports: Connection | None = None,
) -> None:
    """The ticket worker without HTTP, until a stop signal: `myticket worker`, and the
    worker process of `serve`, which sends its metrics through `reports`."""
    from ..db.repository import Repository
    from .loop import run_worker_loops

    assert settings.database_url is not None
    # No connection at start: a worker (re)started while PostgreSQL is down waits for it,
    # logging the outage once, instead of exiting and being restarted again and again.
    repository = await Repository.connect(
        settings.database_url, min_connections=0, max_connections=settings.database_pool_size
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in stop_signals:
        loop.add_signal_handler(signal_number, stop.set)
    metrics = Metrics()
    reporter = asyncio.create_task(_send_reports(metrics, reports, stop)) if reports is not None else None
    try:
        log.info("worker started (%d loops, process %d)", settings.workers, os.getpid())
        await run_worker_loops(repository, metrics, settings, stop, exit_on_memory_error=True)
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
    from ..telemetry.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    stop_when_parent_dies(parent_pid)
    set_process_title("worker")
    # Ctrl-C reaches the whole process group; the HTTP process decides when this
    # process stops (SIGTERM), after its own requests are answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    asyncio.run(run_worker_process(settings, stop_signals=(signal.SIGTERM,), reports=reports))


def stop_when_parent_dies(parent_pid: int) -> None:
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
