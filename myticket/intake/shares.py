"""Per-sender shares of a bounded resource: no I/O, the accounting only.

A resource shared by every sender (body bytes in memory, tickets waiting for a commit,
open connections) has a bound in total, and each sender a bound of its own below it, so
that one sender that asks for everything gets refused (429) while the others still
find room. Which bound refused an amount is returned, so the caller can tell "you are
over your share" (only that sender's fault) from "the service is full" (503).
"""

from __future__ import annotations

import enum
import math


class Shortage(enum.Enum):
    """Why an amount could not be taken."""

    SENDER_SHARE = "sender_share"  # this sender holds its share: only it is refused
    TOTAL = "total"  # the resource is full for everyone


def sender_limit(total_limit: int, share_percent: int, *, at_least: int = 1) -> int:
    """A sender's bound: `share_percent` of `total_limit`, rounded up, but never below
    `at_least` (one whole body, one ticket) nor above the total."""
    return min(total_limit, max(at_least, math.ceil(total_limit * share_percent / 100)))


class SenderShares:
    """Amounts held per sender, never more than `total_limit` in all nor more than
    `sender_limit` for one sender. A sender that holds nothing is forgotten, so the
    table is as large as the number of senders holding something."""

    __slots__ = ("total_limit", "sender_limit", "total", "_held")

    def __init__(self, total_limit: float, sender_limit: float) -> None:
        self.total_limit = total_limit
        self.sender_limit = sender_limit
        self.total = 0
        self._held: dict[str, int] = {}

    def held(self, sender: str) -> int:
        return self._held.get(sender, 0)

    @property
    def senders(self) -> int:
        """Senders holding something now."""
        return len(self._held)

    def shortage(self, sender: str, amount: int, *, within_share: bool = True) -> Shortage | None:
        """What would refuse `amount` more for `sender` now (a check that takes nothing).
        The sender's own share is checked first: a sender over its share is told so
        even when the service is also full. `within_share=False` checks the total only
        (a trusted proxy's connections carry many senders). A sender limit as large as
        the total is no share: only the total refuses then."""
        has_share = within_share and self.sender_limit < self.total_limit
        if has_share and self.held(sender) + amount > self.sender_limit:
            return Shortage.SENDER_SHARE
        if self.total + amount > self.total_limit:
            return Shortage.TOTAL
        return None

    def take(self, sender: str, amount: int, *, within_share: bool = True) -> Shortage | None:
        """Take `amount` for `sender`; None when taken, else why not (nothing taken)."""
        shortage = self.shortage(sender, amount, within_share=within_share)
        if shortage is None and amount:
            self._held[sender] = self.held(sender) + amount
            self.total += amount
        return shortage

    def give_back(self, sender: str, amount: int) -> None:
        if not amount:
            return
        left = self.held(sender) - amount
        if left < 0:
            raise ValueError(f"giving back {amount} for a sender holding {self.held(sender)}")
        if left:
            self._held[sender] = left
        else:
            del self._held[sender]
        self.total -= amount
