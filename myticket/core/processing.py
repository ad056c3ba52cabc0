"""What processing decides, as pure functions: no I/O, so each decision is tested
without a database.

A worker batch is decided in two steps around one database round trip:
`plan_batch` settles what needs no registration (bodies processed before are
duplicates, unparsable ones are rejected), the worker registers the digests of the
rest, and `settle_batch` turns what the database answered into outcomes, lines and
catalogue sightings. `retry_decision` says what a failed batch means for its tickets,
as a value the worker acts on, instead of state carried between calls.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from .database_errors import DatabaseConflict, DatabaseUnavailable, DataRejected
from .domain import ClaimedTicket, ProductSighting, TicketOutcome
from .parser import ParsedTicket, TicketLine, TicketParseError

Parse = Callable[[bytes], ParsedTicket]


# What processing one line of a ticket holds in memory, counted in a worker claim's
# budget beside the body bytes (MYTICKET_WORKER_BATCH_MAX_BYTES): the parsed line, its
# outcome and catalogue rows and their JSON. Measured with tracemalloc on one 50,000-line
# ticket: 1.3 kB per line with 10,000 distinct products, 1.7 kB with 50,000; 2 KiB
# leaves room for the driver's copy of the JSON.
CLAIM_COST_PER_LINE = 2048


def body_lines(body: bytes) -> int:
    """The lines the parser will split `body` into, give or take one (it breaks on
    \r\n, \r and \n): counted at ingest (two passes of memchr speed, about a
    millisecond per MiB) so that a claim's budget needs no body. The same count as
    the SQL function myticket_body_lines."""
    return max(body.count(b"\n"), body.count(b"\r")) + 1


def crash_rejection(crashes: int, max_attempts: int) -> str | None:
    """Why a ticket is rejected without being parsed again: the worker process died
    `max_attempts` times processing it alone (out of memory, a crash). None: try it."""
    if crashes >= max_attempts:
        return f"worker died {crashes} times while processing this ticket"
    return None


def body_digest(body: bytes) -> bytes:
    """The SHA-256 of a body: two deliveries of the same bytes are one ticket."""
    return hashlib.sha256(body).digest()


@dataclass
class BatchPlan:
    """A batch after its first step: outcomes already decided, and the parsed tickets
    whose digests must be registered to learn whether they came first."""

    outcomes: dict[str, TicketOutcome] = field(default_factory=dict)
    parsed: list[tuple[ClaimedTicket, ParsedTicket, bytes]] = field(default_factory=list)
    # digest -> the first ticket of this batch with that body: the candidate to register
    candidates: dict[bytes, str] = field(default_factory=dict)
    # ticket id -> why it was rejected, for the log
    rejections: dict[str, str] = field(default_factory=dict)


def plan_batch(
    tickets: Sequence[ClaimedTicket], digests: Mapping[str, bytes], processed_before: Mapping[bytes, str], parse: Parse,
    *, max_crashes: int | None = None,
) -> BatchPlan:
    """Tickets that killed the worker `max_crashes` times (rejected, not parsed
    again), duplicates of bodies processed before (not parsed again), rejections by the
    parser, and the parsed rest with one candidate per distinct body."""
    plan = BatchPlan()
    for ticket in tickets:
        digest = digests[ticket.id]
        reason = crash_rejection(ticket.crashes, max_crashes) if max_crashes is not None else None
        if reason is not None:
            plan.outcomes[ticket.id] = TicketOutcome(ticket.id, "rejected", body_sha256=digest, error=reason)
            plan.rejections[ticket.id] = reason
            continue
        if digest in processed_before:
            plan.outcomes[ticket.id] = duplicate_outcome(ticket, digest, processed_before[digest])
            continue
        try:
            result = parse(ticket.body)
        except TicketParseError as exc:
            plan.outcomes[ticket.id] = TicketOutcome(ticket.id, "rejected", body_sha256=digest, error=str(exc))
            plan.rejections[ticket.id] = str(exc)
            continue
        plan.parsed.append((ticket, result, digest))
        plan.candidates.setdefault(digest, ticket.id)
    return plan


@dataclass
class BatchResults:
    """What one batch writes: an outcome per ticket, the lines of the processed ones
    (each with its ticket's id), and the catalogue sightings in product_id order."""

    outcomes: dict[str, TicketOutcome]
    lines: list[tuple[str, TicketLine]]
    products: list[ProductSighting]


def settle_batch(plan: BatchPlan, first_ticket: Mapping[bytes, str]) -> BatchResults:
    """Outcomes, lines and sightings, once `first_ticket` (digest -> the ticket that
    registered it first, here or in another worker) is known."""
    outcomes = dict(plan.outcomes)
    lines: list[tuple[str, TicketLine]] = []
    sightings: dict[str, ProductSighting] = {}
    for ticket, result, digest in plan.parsed:
        original = first_ticket[digest]
        if original != ticket.id:
            outcomes[ticket.id] = duplicate_outcome(ticket, digest, original)
            continue
        outcomes[ticket.id] = processed_outcome(ticket, result, digest)
        last_of_each: dict[str, TicketLine] = {}
        for line in result.lines:
            lines.append((ticket.id, line))
            last_of_each[line.product_id] = line  # a product repeated in a ticket: its last line
        for product_id, line in last_of_each.items():
            merge_sighting(sightings, ticket, product_id, line.name, line.price)
    products = sorted(sightings.values(), key=lambda sighting: sighting.product_id)
    return BatchResults(outcomes, lines, products)


def merge_sighting(
    sightings: dict[str, ProductSighting], ticket: ClaimedTicket, product_id: str, name: str, price: Decimal
) -> None:
    """Fold one ticket's product into the batch's view; the latest received ticket
    (by received_at, ties by ticket id) gives name and price, whatever the order
    the tickets are folded in."""
    current = sightings.get(product_id)
    if current is None:
        sightings[product_id] = ProductSighting(
            product_id, name, price, ticket.received_at, ticket.received_at, ticket.id
        )
        return
    current.times_seen += 1
    current.first_seen_at = min(current.first_seen_at, ticket.received_at)
    if (ticket.received_at, ticket.id) > (current.last_seen_at, current.last_ticket_id):
        current.name, current.price = name, price
        current.last_seen_at, current.last_ticket_id = ticket.received_at, ticket.id


def processed_outcome(ticket: ClaimedTicket, parsed: ParsedTicket, digest: bytes) -> TicketOutcome:
    return TicketOutcome(
        id=ticket.id,
        status="processed",
        body_sha256=digest,
        order_ref=parsed.order_ref,
        vat=parsed.vat,
        total=parsed.total,
        headers=parsed.headers,
        warnings=parsed.warnings,
        text_encoding=parsed.encoding,
    )


def duplicate_outcome(ticket: ClaimedTicket, digest: bytes, original: str) -> TicketOutcome:
    return TicketOutcome(id=ticket.id, status="duplicate", body_sha256=digest, duplicate_of=original)


class RetryAction(enum.Enum):
    PAUSE = "pause"  # the database is unavailable: nothing is wrong with these tickets
    SPLIT = "split"  # retry the batch's tickets one at a time, to find the one at fault
    CHARGE = "charge"  # a batch of one failed: count the attempt against that ticket
    RAISE = "raise"  # nothing was claimed: the failure belongs to no ticket


@dataclass(frozen=True)
class RetryDecision:
    """What to do after a batch failed. For CHARGE: `error` is what the ticket is
    rejected with once it has failed `max_attempts` times."""

    action: RetryAction
    ticket_id: str | None = None
    error: str | None = None
    max_attempts: int = 0


def retry_decision(exc: BaseException, *, claimed: Sequence[str], max_attempts: int) -> RetryDecision:
    """Only an unavailable database pauses the worker (a conflict is retried). A
    failed batch of several is retried one ticket at a time; alone, a ticket whose data
    PostgreSQL refused is rejected at once (the same bytes fail again), one that failed
    otherwise after `max_attempts` attempts."""
    if isinstance(exc, DatabaseUnavailable) and not isinstance(exc, DatabaseConflict):
        return RetryDecision(RetryAction.PAUSE)
    if len(claimed) > 1:
        return RetryDecision(RetryAction.SPLIT)
    if not claimed:
        return RetryDecision(RetryAction.RAISE)
    if isinstance(exc, DataRejected):
        return RetryDecision(
            RetryAction.CHARGE, claimed[0], f"PostgreSQL refused the ticket's data: {exc.reason}", max_attempts=1
        )
    return RetryDecision(
        RetryAction.CHARGE, claimed[0], f"processing failed {max_attempts} times: {type(exc).__name__}: {exc}",
        max_attempts=max_attempts,
    )
