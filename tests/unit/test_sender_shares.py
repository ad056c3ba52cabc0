"""The pure pieces of issue 18's fairness: who a sender is, per-sender shares, and the
order in which the fair queue fills batches."""

from __future__ import annotations

import pytest

from myticket.core.senders import UNKNOWN_SENDER, parse_networks, sender_key
from myticket.intake.budget import ByteBudget
from myticket.intake.fair_queue import FairQueue
from myticket.intake.shares import SenderShares, Shortage, sender_limit


def test_a_sender_past_its_share_is_refused_and_another_is_not():
    shares = SenderShares(total_limit=100, sender_limit=30)

    assert shares.take("greedy", 30) is None
    assert shares.take("greedy", 1) is Shortage.SENDER_SHARE
    assert shares.take("polite", 30) is None
    assert shares.take("third", 30) is None
    assert shares.take("fourth", 11) is Shortage.TOTAL
    assert shares.take("fourth", 10) is None
    assert shares.total == 100

    shares.give_back("greedy", 30)
    assert shares.held("greedy") == 0
    assert shares.senders == 3  # a sender holding nothing is forgotten
    with pytest.raises(ValueError):
        shares.give_back("greedy", 1)


def test_a_share_as_large_as_the_total_is_no_share_and_a_trusted_proxy_meets_the_total_only():
    whole = SenderShares(total_limit=2, sender_limit=2)
    assert whole.take("one", 2) is None
    assert whole.take("one", 1) is Shortage.TOTAL

    shares = SenderShares(total_limit=10, sender_limit=2)
    assert shares.take("proxy", 5, within_share=False) is None
    assert shares.take("proxy", 1) is Shortage.SENDER_SHARE


def test_a_senders_limit_is_its_percent_of_the_total_within_bounds():
    assert sender_limit(20_000, 25) == 5_000
    assert sender_limit(3, 25) == 1
    assert sender_limit(256, 1, at_least=10) == 10
    assert sender_limit(10, 100, at_least=50) == 10


def test_the_byte_budget_says_whether_the_sender_or_the_total_is_short():
    budget = ByteBudget(100, sender_limit=40)
    greedy, polite = budget.reservation("greedy"), budget.reservation("polite")

    assert greedy.grow(40)
    assert not greedy.grow(1)
    assert greedy.shortage is Shortage.SENDER_SHARE
    assert polite.grow(40)
    assert budget.fits(20, "third") and not budget.fits(21, "third")
    assert budget.shortage(21, "third") is Shortage.TOTAL
    greedy.release()
    greedy.release()
    assert budget.reserved == 40
    polite.release()
    assert budget.reserved == 0


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("127.0.0.3", [], [], "127.0.0.3"),
        # A header is not believed from an untrusted peer.
        ("127.0.0.3", ["10.1.1.1"], [], "127.0.0.3"),
        ("127.0.0.3", ["10.1.1.1"], ["10.0.0.0/8"], "127.0.0.3"),
        # From a trusted proxy: the last hop only (the earlier ones came from the client).
        ("10.0.0.5", ["1.2.3.4, 192.0.2.7"], ["10.0.0.0/8"], "192.0.2.7"),
        ("10.0.0.5", ["1.2.3.4", "192.0.2.8"], ["10.0.0.0/8"], "192.0.2.8"),
        ("10.0.0.5", ["not an address"], ["10.0.0.0/8"], "10.0.0.5"),
        ("::ffff:127.0.0.2", [], [], "127.0.0.2"),
        (None, [], [], UNKNOWN_SENDER),
    ],
)
def test_the_sender_is_the_peer_unless_a_trusted_proxy_names_it(peer, forwarded, trusted, expected):
    assert sender_key(peer, forwarded, parse_networks(trusted)) == expected


def test_a_bad_network_is_named():
    with pytest.raises(ValueError, match="'10.0.0.0/33'"):
        parse_networks(["10.0.0.0/8", "10.0.0.0/33"])


def test_the_fair_queue_serves_senders_in_turn_not_in_arrival_order():
    queue: FairQueue[str] = FairQueue(quantum=100)
    for number in range(6):
        queue.push("greedy", f"g{number}", 100)
    queue.push("polite", "p0", 10)
    queue.push("polite", "p1", 10)
    queue.push("third", "t0", 100)

    # One round, one quantum per sender: greedy's first, polite's two small ones, third's.
    assert queue.take_batch(max_items=10, max_bytes=10_000) == ["g0", "p0", "p1", "t0"]
    # Alone, a sender still adds one quantum per batch: batches stay short.
    assert queue.take_batch(max_items=10, max_bytes=10_000) == ["g1"]
    queue.push("polite", "p2", 10)
    queue.push("polite", "p3", 10)
    assert queue.take_batch(max_items=2, max_bytes=10_000) == ["g2", "p2"]
    # The round resumes with the sender whose turn the full batch cut.
    assert queue.take_batch(max_items=10, max_bytes=10_000) == ["p3", "g3"]
    assert queue.take_batch(max_items=10, max_bytes=150) == ["g4"]
    assert len(queue) == 1 and queue.queued("greedy") == 1


def test_the_fair_queue_keeps_one_senders_order_and_takes_an_oversized_item_alone():
    queue: FairQueue[int] = FairQueue(quantum=10)
    for number, size in enumerate((5, 50, 5)):
        queue.push("only", number, size)

    assert queue.take_batch(max_items=10, max_bytes=20) == [0]
    assert queue.take_batch(max_items=10, max_bytes=20) == [1]  # larger than a quantum and max_bytes: alone
    assert queue.take_batch(max_items=10, max_bytes=20) == [2]


async def test_group_commit_puts_a_polite_ticket_in_the_next_batch_whatever_a_greedy_sender_queued():
    import asyncio
    from datetime import datetime, timezone

    from myticket.core.domain import IncomingTicket
    from myticket.intake.group_commit import GroupCommitIngest

    gate = asyncio.Event()
    batches: list[list[str]] = []

    async def held_store(tickets):
        batches.append([ticket.id for ticket in tickets])
        await gate.wait()

    ingest = GroupCommitIngest(held_store, batch_max_size=4, max_waiting=100, fair_quantum_bytes=10)
    now = datetime.now(timezone.utc)

    def ticket(name: str) -> IncomingTicket:
        return IncomingTicket(name, now, None, b"x" * 10)

    # The tasks submit in this order: g0 leaves at once, alone (nothing was in flight);
    # the others queue behind its flush, which the set gate lets finish.
    first = asyncio.create_task(ingest.submit(ticket("g0"), sender="greedy"))
    greedy = [asyncio.create_task(ingest.submit(ticket(f"g{n}"), sender="greedy")) for n in range(1, 9)]
    polite = asyncio.create_task(ingest.submit(ticket("p0"), sender="polite"))
    gate.set()
    await asyncio.gather(first, *greedy, polite)

    assert batches[0] == ["g0"]
    # FIFO would have made p0 wait behind g1..g8 (two batches); in turns it is in the
    # next, and that batch holds one quantum of greedy's tickets, not four tickets.
    assert batches[1] == ["g1", "p0"]
    assert [name for batch in batches for name in batch].count("p0") == 1
