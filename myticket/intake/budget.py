"""A bound on the request body bytes held in memory: being read, or waiting for storage.

The waiting tickets are bounded in number (MYTICKET_MAX_WAITING_TICKETS), but thousands
of senders each sending a large body slowly would still hold gigabytes. Each request
reserves its body's bytes before they are read (its Content-Length when declared, else
chunk by chunk as they arrive) and releases them once its ticket is stored or refused.
A request that cannot reserve is refused with 503 instead. No I/O here.
"""

from __future__ import annotations


class ByteBudget:
    """Bytes reserved by requests in progress, never more than `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reserved = 0

    def fits(self, size: int) -> bool:
        """Whether `size` more bytes could be reserved now (a check that reserves nothing)."""
        return self.reserved + size <= self.limit

    def reservation(self) -> Reservation:
        return Reservation(self)


class Reservation:
    """One request's share of a ByteBudget: grows as its body is read, released once."""

    __slots__ = ("_budget", "size", "_released")

    def __init__(self, budget: ByteBudget) -> None:
        self._budget = budget
        self.size = 0
        self._released = False

    def grow(self, size: int) -> bool:
        """Reserve `size` more bytes; False (and nothing reserved) when the budget is short."""
        if self._released:
            raise RuntimeError("a released reservation cannot grow")
        if not self._budget.fits(size):
            return False
        self._budget.reserved += size
        self.size += size
        return True

    def release(self) -> None:
        """Give the bytes back; a second call does nothing, so every exit path may call it."""
        if self._released:
            return
        self._released = True
        self._budget.reserved -= self.size
