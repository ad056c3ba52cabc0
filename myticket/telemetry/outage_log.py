"""One line when a database outage begins and one when it ends, not one per retry.

The worker's loops and the maintenance rounds both retry against an unavailable
database; each says what it is doing in its own words and logger, through this one
piece of state.
"""

from __future__ import annotations

import logging
import time


class DatabaseOutageLog:
    """Logs a database outage when it begins and when it ends, not at every retry.

    `began` takes the reason and the retry interval, `still` the reason (at DEBUG),
    `ended` the outage's length in seconds."""

    def __init__(self, log: logging.Logger, *, began: str, still: str, ended: str) -> None:
        self._log = log
        self._began = began
        self._still = still
        self._ended = ended
        self._down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failed(self, exc: Exception, *, retry_seconds: float) -> None:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if self._down_since is None:
            self._down_since = time.monotonic()
            self._log.warning(self._began, reason, retry_seconds)
        else:
            self._log.debug(self._still, reason)

    def answered(self) -> None:
        if self._down_since is not None:
            self._log.warning(self._ended, time.monotonic() - self._down_since)
            self._down_since = None
