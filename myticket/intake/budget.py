"""A bound on the request body bytes held in memory: being read, or waiting for storage.

The waiting tickets are bounded in number (MYTICKET_MAX_WAITING_TICKETS), but thousands
of senders each sending a large body slowly would still hold gigabytes. Each request
reserves its body's bytes as they arrive (never a declared Content-Length ahead of
them: a connection that declares 1 MiB and sends nothing holds nothing) and releases
them once its ticket is stored or refused. The bytes are also counted per sender, and
one sender holds at most its share (MYTICKET_SENDER_SHARE_PERCENT): a request that
cannot reserve is refused, with 429 when its own sender is over its share, else 503.
No I/O here.
"""

from __future__ import annotations

from .shares import SenderShares, Shortage

# The sender of reservations that name none (tools and tests that do not care).
ANY_SENDER = ""


class ByteBudget:
    """Bytes reserved by requests in progress, never more than `limit`, and never more
    than `sender_limit` for one sender (by default the whole limit)."""

    def __init__(self, limit: int, sender_limit: int | None = None) -> None:
        self.limit = limit
        self.shares = SenderShares(limit, sender_limit if sender_limit is not None else limit)

    @property
    def reserved(self) -> int:
        return self.shares.total

    def shortage(self, size: int, sender: str = ANY_SENDER) -> Shortage | None:
        """What would keep `size` more bytes from being reserved now (a check that
        reserves nothing), or None when they fit."""
        return self.shares.shortage(sender, size)

    def fits(self, size: int, sender: str = ANY_SENDER) -> bool:
        """Whether `size` more bytes could be reserved now (a check that reserves nothing)."""
        return self.shortage(size, sender) is None

    def reservation(self, sender: str = ANY_SENDER) -> Reservation:
        return Reservation(self, sender)


class Reservation:
    """One request's share of a ByteBudget: grows as its body is read, released once."""

    __slots__ = ("_budget", "sender", "size", "_released", "shortage")

    def __init__(self, budget: ByteBudget, sender: str = ANY_SENDER) -> None:
        self._budget = budget
        self.sender = sender
        self.size = 0
        self._released = False
        # Why the last refused `grow` was refused: the sender's share, or the total.
        self.shortage: Shortage | None = None

    def grow(self, size: int) -> bool:
        """Reserve `size` more bytes; False (and nothing reserved, `shortage` saying
        why) when the budget or the sender's share is short."""
        if self._released:
            raise RuntimeError("a released reservation cannot grow")
        self.shortage = self._budget.shares.take(self.sender, size)
        if self.shortage is not None:
            return False
        self.size += size
        return True

    def release(self) -> None:
        """Give the bytes back; a second call does nothing, so every exit path may call it."""
        if self._released:
            return
        self._released = True
        self._budget.shares.give_back(self.sender, self.size)
