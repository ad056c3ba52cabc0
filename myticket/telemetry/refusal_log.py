"""Refusals logged as one line per reason per second, with a count, not one line each.

A sender flooding the service with bad requests (an expired signing secret, oversized
bodies, a retry storm while the service is overloaded) used to write one line per
refused request: 265,019 lines, 36 MB in 3 minutes. Here the first refusal of a reason
is logged as it always was (its message, its ticket id); the others within the second
are counted, and one line gives their count once the second is over
(`RepeatCollapser` of `loop_errors` decides).

The state is per event loop (one per process in the service, one per test), so two
tests never share a window.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from .loop_errors import COLLAPSE_SECONDS, RepeatCollapser


class RefusalLog:
    """Logs the first refusal of a reason in each window; counts and summarises the rest."""

    def __init__(self, interval: float = COLLAPSE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.collapser = RepeatCollapser(interval)
        self.clock = clock
        self._timer: asyncio.TimerHandle | None = None

    def refused(
        self, log: logging.Logger, level: int, reason: str, message: str, *args: Any, ticket_id: str | None = None
    ) -> None:
        """Log `message % args` on `log` unless `reason` was logged there within the window."""
        if self.first_in_window(log.name, level, reason):
            extra: dict[str, Any] = {"reason": reason}
            if ticket_id is not None:
                extra["ticket_id"] = ticket_id
            log.log(level, message, *args, extra=extra)

    def first_in_window(self, logger_name: str, level: int, reason: str) -> bool:
        """True when a refusal of `reason` is to be logged now; False when it is counted
        (for a record already made, as a logging.Filter sees it)."""
        now = self.clock()
        self._close_due(now)
        first = self.collapser.report((logger_name, str(level), reason), now)
        self._schedule()
        return first

    def _schedule(self) -> None:
        due = self.collapser.next_due()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script, a test): windows close at the next refusal
            return
        if due is None or self._timer is not None:
            return
        self._timer = loop.call_at(loop.time() + max(0.0, due - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._close_due(self.clock())
        self._schedule()

    def _close_due(self, now: float) -> None:
        for kind, repeats in self.collapser.close_due(now):
            # Past MAX_KINDS kinds at once, the collapser counts the rest under one kind.
            logger_name, level, reason = kind if len(kind) == 3 else (__name__, str(logging.INFO), kind[0])
            logging.getLogger(logger_name).log(
                int(level), "%s: %d more like this in the last %g s",
                reason, repeats, self.collapser.interval, extra={"reason": reason, "count": repeats},
            )


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RefusalLog] = weakref.WeakKeyDictionary()
_without_loop = RefusalLog()


def refusal_log() -> RefusalLog:
    """The RefusalLog of the running event loop (or of the process, outside one)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _without_loop
    log = _per_loop.get(loop)
    if log is None:
        log = _per_loop[loop] = RefusalLog()
    return log


def refused(
    log: logging.Logger, level: int, reason: str, message: str, *args: Any, ticket_id: str | None = None
) -> None:
    """Log a refusal, summarised per reason and second: see `RefusalLog.refused`."""
    refusal_log().refused(log, level, reason, message, *args, ticket_id=ticket_id)
