"""The event loop's error reports, at most one line per kind per second.

When the process runs out of file descriptors, asyncio's accept loop reports
"socket.accept() out of system resource" through the loop's exception handler for
every attempt, with a traceback: Python 3.11 keeps trying after the first EMFILE (up to
the listen backlog, 128) and schedules a retry for each, so a few seconds of it wrote
megabytes of log. The handler installed here logs the first report of a kind, counts
the repeats, and logs their count once the second is over.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("myticket.loop")

# Resource exhaustion: the traceback adds nothing to the errno, so the line has none.
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
COLLAPSE_SECONDS = 1.0
# Kinds tracked at once; beyond it, new kinds share one window (bounded memory).
MAX_KINDS = 256
OTHER_KINDS = ("(other event loop errors)",)


@dataclass
class _Window:
    opened_at: float
    repeats: int = 0


class RepeatCollapser:
    """Which reports to log now and which to count: pure, the clock is passed in.

    The first report of a kind opens a window of `interval` seconds and is logged;
    the others in the window are counted. `close_due` ends the windows whose time is
    up, and gives the count of each that had repeats, which opens a new window for it
    (a sustained flood is one line per interval); a window without repeats is dropped.
    """

    def __init__(self, interval: float = COLLAPSE_SECONDS, max_kinds: int = MAX_KINDS) -> None:
        self.interval = interval
        self.max_kinds = max_kinds
        self._windows: dict[tuple[str, ...], _Window] = {}

    def report(self, kind: tuple[str, ...], now: float) -> bool:
        """True when this report is to be logged now; False when it is counted."""
        if kind not in self._windows and len(self._windows) >= self.max_kinds:
            kind = OTHER_KINDS
        window = self._windows.get(kind)
        if window is None:
            self._windows[kind] = _Window(opened_at=now)
            return True
        window.repeats += 1
        return False

    def close_due(self, now: float) -> list[tuple[tuple[str, ...], int]]:
        """The kinds whose window is over and that repeated in it, with their count."""
        repeated = []
        for kind, window in list(self._windows.items()):
            if now - window.opened_at < self.interval:
                continue
            if window.repeats:
                repeated.append((kind, window.repeats))
                self._windows[kind] = _Window(opened_at=now)
            else:
                del self._windows[kind]
        return repeated

    def next_due(self) -> float | None:
        """When the earliest open window ends, or None when none is open."""
        if not self._windows:
            return None
        return min(window.opened_at for window in self._windows.values()) + self.interval


def report_kind(context: dict[str, Any]) -> tuple[str, ...]:
    """What makes two reports "the same": the message and the exception's type and errno."""
    exception = context.get("exception")
    message = str(context.get("message", ""))[:200]
    if exception is None:
        return (message,)
    return (message, type(exception).__name__, str(getattr(exception, "errno", "")))


class CollapsingExceptionHandler:
    """An event loop exception handler that logs each kind of report at most once per
    interval, then how many more there were."""

    def __init__(self, collapser: RepeatCollapser | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.collapser = collapser or RepeatCollapser()
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if self.collapser.report(report_kind(context), self.clock()):
            exception = context.get("exception")
            if isinstance(exception, OSError) and exception.errno in EXHAUSTION_ERRNOS:
                log.error(
                    "%s: %s (more of these are counted, one line per %g s)",
                    context.get("message"), exception, self.collapser.interval,
                )
            else:
                loop.default_exception_handler(context)
        self._schedule(loop)

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self.collapser.next_due()
        if due is None or self._timer is not None or loop.is_closed():
            return
        self._timer = loop.call_at(loop.time() + max(0.0, due - self.clock()), self._close_due, loop)

    def _close_due(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        for kind, repeats in self.collapser.close_due(self.clock()):
            log.error("%s: %d more in the last %g s", kind[0], repeats, self.collapser.interval)
        self._schedule(loop)


def install(loop: asyncio.AbstractEventLoop) -> None:
    """Make `loop` report its errors through a CollapsingExceptionHandler."""
    loop.set_exception_handler(CollapsingExceptionHandler())
