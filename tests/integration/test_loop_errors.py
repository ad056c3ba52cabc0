"""Out of file descriptors, the service logs the failed accepts once per second, not a
traceback per attempt, and serves again once descriptors are free."""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import socket
import sys
from datetime import datetime
from pathlib import Path

import aiohttp
import pytest

from myticket.telemetry.loop_errors import CollapsingExceptionHandler, RepeatCollapser, report_kind

from ..paths import REFERENCE_TICKET
from ..service_process import Service
from ..waiting import wait_until

ACCEPT_FAILED = "socket.accept() out of system resource"
# Enough for the service to start (database pool, spool, listening socket), and few
# enough that the test's connections exhaust it.
DESCRIPTOR_LIMIT = 64
CONNECTIONS = 90  # past the limit, yet within the listen backlog (128): connect() does not wait

LIMIT_AND_RUN = (
    "import resource, runpy, sys; "
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({DESCRIPTOR_LIMIT}, {DESCRIPTOR_LIMIT})); "
    "sys.argv = ['myticket', *sys.argv[1:]]; "
    "runpy.run_module('myticket', run_name='__main__')"
)


class ServiceWithFewDescriptors(Service):
    """`myticket serve` with RLIMIT_NOFILE lowered to DESCRIPTOR_LIMIT."""

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-c", LIMIT_AND_RUN, *args]


def accept_failure_lines(log: Path) -> list[str]:
    return [line for line in log.read_text(errors="replace").splitlines() if ACCEPT_FAILED in line]


def seconds_spanned(lines: list[str]) -> float:
    stamps = [datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S.%fZ") for line in lines]  # the UTC time of the text format
    return (max(stamps) - min(stamps)).total_seconds()


async def test_running_out_of_descriptors_logs_once_a_second_and_the_service_recovers(database_url, db, tmp_path):
    service = ServiceWithFewDescriptors(database_url, tmp_path / "data", serve_args=("--no-worker",))
    clients: list[socket.socket] = []
    try:
        await service.start()
        for _ in range(CONNECTIONS):
            clients.append(socket.create_connection(("127.0.0.1", service.port), timeout=5))

        async def a_second_of_failures_was_summed_up() -> bool:
            lines = accept_failure_lines(service.log)
            # Unfixed, asyncio logged one traceback per attempt: hundreds in the first second.
            assert len(lines) <= 5, f"{len(lines)} lines about failed accepts already"
            return any(re.search(r"\d+ more in the last 1 s", line) for line in lines)

        await wait_until(a_second_of_failures_was_summed_up, timeout=20, what="a summary of a second of failed accepts")
        for client in clients:
            client.close()
        clients.clear()

        async def serves_again() -> bool:
            try:
                async with aiohttp.ClientSession() as session:
                    async with session.post(f"{service.base}/ticket", data=REFERENCE_TICKET) as response:
                        return response.status == 202
            except aiohttp.ClientError:
                return False

        await wait_until(serves_again, timeout=30, what="the service to store a ticket again")
        # The server leaves an encoded body as received: the middleware refuses it.
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{service.base}/ticket", data=REFERENCE_TICKET, headers={"Content-Encoding": "gzip"}
            ) as response:
                assert response.status == 415
    finally:
        for client in clients:
            client.close()
        service.stop()

    lines = accept_failure_lines(service.log)
    assert lines[0].endswith("[Errno 24] Too many open files (more of these are counted, one line per 1 s)")
    assert len(lines) <= seconds_spanned(lines) + 2, lines
    assert "Traceback" not in service.log.read_text(errors="replace")


# -- the collapsing, without a process -------------------------------------------------

def test_the_first_report_of_a_kind_is_logged_and_repeats_are_counted_per_interval():
    collapser = RepeatCollapser(interval=1.0)
    accept = ("accept failed", "OSError", "24")
    other = ("something else",)

    assert collapser.report(accept, now=10.0)
    assert not collapser.report(accept, now=10.1)
    assert not collapser.report(accept, now=10.9)
    assert collapser.report(other, now=10.5)
    assert collapser.close_due(now=10.99) == []
    assert collapser.close_due(now=11.0) == [(accept, 2)]  # `other` did not repeat: closed silently
    # A sustained flood: the window reopened, so the next repeats are counted, not logged.
    assert not collapser.report(accept, now=11.2)
    assert collapser.close_due(now=12.0) == [(accept, 1)]
    assert collapser.close_due(now=13.0) == []
    assert collapser.next_due() is None
    assert collapser.report(accept, now=13.5)  # quiet for a whole interval: logged again


def test_the_kinds_tracked_at_once_are_bounded():
    collapser = RepeatCollapser(interval=1.0, max_kinds=3)
    logged = [collapser.report((f"message {n}",), now=0.0) for n in range(10)]
    assert logged == [True, True, True, True, False, False, False, False, False, False]
    assert sum(count for _kind, count in collapser.close_due(now=1.0)) == 6


async def test_the_handler_logs_one_line_without_traceback_then_the_count(caplog):
    caplog.set_level(logging.INFO, logger="myticket.loop")
    loop = asyncio.get_running_loop()
    handler = CollapsingExceptionHandler(RepeatCollapser(interval=0.05))
    context = {"message": ACCEPT_FAILED, "exception": OSError(errno.EMFILE, "Too many open files")}

    for _ in range(500):
        handler(loop, dict(context))

    async def summed_up() -> bool:
        return len(caplog.records) >= 2

    await wait_until(summed_up, timeout=5, what="the count of repeats")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        f"{ACCEPT_FAILED}: [Errno 24] Too many open files (more of these are counted, one line per 0.05 s)",
        f"{ACCEPT_FAILED}: 499 more in the last 0.05 s",
    ]
    assert all(record.exc_info is None for record in caplog.records)


@pytest.mark.parametrize(
    ("context", "kind"),
    [
        ({"message": "m"}, ("m",)),
        ({"message": "m", "exception": OSError(errno.EMFILE, "x")}, ("m", "OSError", str(errno.EMFILE))),
        ({"message": "m", "exception": ValueError("x")}, ("m", "ValueError", "")),
    ],
)
def test_report_kind_is_the_message_and_the_exception_type_and_errno(context, kind):
    assert report_kind(context) == kind
