"""Deficit round robin over per-sender queues: which waiting tickets the next batch takes.

A FIFO queue makes a ticket wait behind every ticket that arrived before it, so a
sender that keeps hundreds of large tickets waiting makes every other sender wait as
long. Here each sender has its own queue, and a batch is filled by visiting the senders
in turn: each visit adds `quantum` bytes to the sender's allowance (its deficit), and the
sender's tickets are taken while they fit in it. A batch is one round: each sender is
visited once, so it adds at most about one quantum of bytes to a batch, and a batch
stays short (quick to commit) whatever one sender has queued. A sender with one small
ticket waiting gets it into the next batch, and that batch is not long. No I/O here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class FairQueue(Generic[Item]):
    """Items queued per sender, taken in deficit round robin by size."""

    def __init__(self, quantum: int) -> None:
        if quantum < 1:
            raise ValueError("the quantum must be at least one byte")
        self.quantum = quantum
        self._queues: dict[Hashable, deque[tuple[Item, int]]] = {}
        self._deficits: dict[Hashable, int] = {}
        # Senders with something queued, in the order they are visited.
        self._turns: deque[Hashable] = deque()
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def queued(self, sender: Hashable) -> int:
        queue = self._queues.get(sender)
        return len(queue) if queue else 0

    def push(self, sender: Hashable, item: Item, size: int) -> None:
        queue = self._queues.get(sender)
        if queue is None:
            queue = self._queues[sender] = deque()
            self._deficits[sender] = 0
            self._turns.append(sender)
        queue.append((item, size))
        self._length += 1

    def take_batch(self, *, max_items: int, max_bytes: float) -> list[Item]:
        """The next batch: at most `max_items` and `max_bytes` of sizes (but always one
        item when any is queued), taken across senders in turn, one round: each sender
        queued now is visited once (more only while the batch is still empty).

        A sender whose next item does not fit its deficit passes its turn (keeping the
        deficit); a sender that empties its queue loses its deficit and its place. When
        the batch is full the sender being served stays first, with what is left of its
        deficit, so the next batch resumes the round where this one stopped.
        """
        batch: list[Item] = []
        total = 0
        visits_left = len(self._turns)
        while self._turns and len(batch) < max_items and (visits_left > 0 or not batch):
            visits_left -= 1
            sender = self._turns[0]
            queue = self._queues[sender]
            deficit = self._deficits[sender] + self.quantum
            full = False
            while queue:
                _item, size = queue[0]
                if size > deficit:
                    break
                if len(batch) == max_items or (batch and total + size > max_bytes):
                    full = True
                    break
                queue.popleft()
                batch.append(_item)
                total += size
                deficit -= size
                self._length -= 1
            if not queue:
                del self._queues[sender], self._deficits[sender]
                self._turns.popleft()
            elif full:
                # Its turn is not over: keep what it had before this visit's quantum
                # was added only once (no double quantum when the round resumes).
                self._deficits[sender] = max(0, deficit - self.quantum)
                break
            else:
                self._deficits[sender] = deficit
                self._turns.rotate(-1)
        return batch
