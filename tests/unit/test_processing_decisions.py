"""The processing decisions, without a database: duplicates, outcomes, the catalogue's
folding within one batch, and what a failed batch means for its tickets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from myticket.core.database_errors import DatabaseConflict, DatabaseUnavailable, DataRejected
from myticket.core.domain import ClaimedTicket
from myticket.core.parser import TicketParseError, parse_ticket
from myticket.core.processing import (
    RetryAction,
    body_digest,
    body_lines,
    crash_rejection,
    merge_sighting,
    plan_batch,
    retry_decision,
    settle_batch,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def claimed(number: int, body: bytes, *, received_at: datetime = NOW) -> ClaimedTicket:
    """Ticket `t<number>`: its id orders as its number does (below 10), as UUIDv7 ids
    order as their reception."""
    return ClaimedTicket(id=f"t{number}", received_at=received_at, body=body)


def ticket_body(order: str, *lines: tuple[str, str, str]) -> bytes:
    rows = "".join(f"{name},{product_id},{price}\n" for name, product_id, price in lines)
    return f"Order: {order}\n\nproduct,product_id,price\n{rows}".encode()


def decide(tickets, processed_before=None, first_ticket=None):
    """Both steps of a batch, with the database's answers given."""
    digests = {ticket.id: body_digest(ticket.body) for ticket in tickets}
    plan = plan_batch(tickets, digests, processed_before or {}, parse_ticket)
    registered = dict(plan.candidates)
    registered.update(first_ticket or {})
    return plan, settle_batch(plan, registered)


def test_latest_received_price_wins_within_one_batch_whatever_the_order():
    earlier = claimed(2, ticket_body("1", ("Old name", "P1", "2.00")), received_at=NOW)
    later = claimed(1, ticket_body("2", ("New name", "P1", "3.00")), received_at=NOW + timedelta(seconds=5))
    for batch in ([earlier, later], [later, earlier]):
        _, results = decide(batch)
        [product] = results.products
        assert (product.name, product.price) == ("New name", Decimal("3.00"))
        assert (product.first_seen_at, product.last_seen_at, product.times_seen) == (
            NOW, NOW + timedelta(seconds=5), 2
        )
        assert product.last_ticket_id == "t1"


def test_received_at_ties_are_broken_by_ticket_id_which_orders_as_arrival():
    first = claimed(1, ticket_body("1", ("First", "P1", "1.00")))
    second = claimed(2, ticket_body("2", ("Second", "P1", "2.00")))
    for batch in ([first, second], [second, first]):
        _, results = decide(batch)
        assert [(p.name, p.price) for p in results.products] == [("Second", Decimal("2.00"))]


def test_merge_sighting_keeps_an_earlier_ticket_from_overwriting_a_later_one():
    sightings = {}
    merge_sighting(sightings, claimed(5, b"", received_at=NOW), "P1", "Later", Decimal("9.00"))
    merge_sighting(sightings, claimed(4, b"", received_at=NOW - timedelta(days=1)), "P1", "Earlier", Decimal("1.00"))
    assert (sightings["P1"].name, sightings["P1"].price) == ("Later", Decimal("9.00"))
    assert sightings["P1"].first_seen_at == NOW - timedelta(days=1)


def test_a_body_processed_before_is_a_duplicate_and_is_not_parsed_again():
    body = ticket_body("1", ("A", "P1", "1.00"))
    ticket = claimed(1, body)

    def parse_must_not_run(_body: bytes):
        raise AssertionError("a known body was parsed again")

    plan = plan_batch([ticket], {ticket.id: body_digest(body)}, {body_digest(body): "t0"}, parse_must_not_run)
    outcome = plan.outcomes["t1"]
    assert (outcome.status, outcome.duplicate_of, outcome.body_sha256) == ("duplicate", "t0", body_digest(body))
    assert plan.parsed == [] and plan.candidates == {}


def test_the_same_bytes_twice_in_one_batch_are_processed_once():
    body = ticket_body("1", ("A", "P1", "1.00"), ("B", "P2", "2.00"))
    plan, results = decide([claimed(1, body), claimed(2, body)])
    assert plan.candidates == {body_digest(body): "t1"}
    assert results.outcomes["t1"].status == "processed"
    assert (results.outcomes["t2"].status, results.outcomes["t2"].duplicate_of) == ("duplicate", "t1")
    assert [(ticket_id, line.product_id) for ticket_id, line in results.lines] == [("t1", "P1"), ("t1", "P2")]
    assert [p.times_seen for p in results.products] == [1, 1]


def test_another_worker_registering_the_body_first_makes_this_one_a_duplicate():
    body = ticket_body("1", ("A", "P1", "1.00"))
    _, results = decide([claimed(1, body)], first_ticket={body_digest(body): "elsewhere"})
    assert (results.outcomes["t1"].status, results.outcomes["t1"].duplicate_of) == ("duplicate", "elsewhere")
    assert results.lines == [] and results.products == []


def test_a_ticket_the_parser_refuses_is_rejected_with_its_reason_and_adds_nothing():
    bad = claimed(1, b"Order: 1\n\nproduct,product_id,price\nA,P1,abc\n")
    good = claimed(2, ticket_body("2", ("B", "P2", "2.00")))
    plan, results = decide([bad, good])
    with_reason = results.outcomes["t1"]
    assert with_reason.status == "rejected"
    assert with_reason.error == plan.rejections["t1"]
    assert "not a number" in with_reason.error
    assert [p.product_id for p in results.products] == ["P2"]


def test_a_processed_outcome_carries_the_parsed_header_and_money_as_decimal():
    body = b"Order: 42\nVAT: 3.10\nTotal: 16.90\n\nproduct,product_id,price\nA,P1,14.90\nB,P2,2\n"
    _, results = decide([claimed(1, body)])
    outcome = results.outcomes["t1"]
    assert (outcome.status, outcome.order_ref, outcome.vat, outcome.total) == (
        "processed", "42", Decimal("3.10"), Decimal("16.90")
    )
    assert outcome.text_encoding == "utf-8"
    assert [line.price for _, line in results.lines] == [Decimal("14.90"), Decimal("2")]


def test_a_product_repeated_in_one_ticket_counts_once_with_its_last_line():
    _, results = decide([claimed(1, ticket_body("1", ("A", "P1", "1.00"), ("A bis", "P1", "1.50")))])
    [product] = results.products
    assert (product.name, product.price, product.times_seen) == ("A bis", Decimal("1.50"), 1)
    assert len(results.lines) == 2


def test_products_come_in_product_id_order_so_concurrent_workers_cannot_deadlock():
    _, results = decide([claimed(1, ticket_body("1", ("Z", "Z9", "1"), ("A", "A1", "1"), ("M", "M5", "1")))])
    assert [p.product_id for p in results.products] == ["A1", "M5", "Z9"]


# -- what a failed batch means -----------------------------------------------------------

def test_an_unavailable_database_pauses_the_worker_whatever_was_claimed():
    for claimed_ids in ((), ("t1",), ("t1", "t2")):
        assert retry_decision(DatabaseUnavailable("down"), claimed=claimed_ids, max_attempts=3).action is RetryAction.PAUSE


def test_a_failed_batch_of_several_is_retried_one_ticket_at_a_time():
    for exc in (RuntimeError("bug"), DatabaseConflict("deadlock"), DataRejected("x", sqlstate="54000", reason="r")):
        assert retry_decision(exc, claimed=("t1", "t2"), max_attempts=3).action is RetryAction.SPLIT


def test_a_failure_alone_is_charged_to_its_ticket_with_bounded_attempts():
    decision = retry_decision(RuntimeError("parser bug"), claimed=("t7",), max_attempts=3)
    assert decision.action is RetryAction.CHARGE
    assert (decision.ticket_id, decision.max_attempts) == ("t7", 3)
    assert decision.error == "processing failed 3 times: RuntimeError: parser bug"


def test_a_conflict_alone_is_charged_not_paused_so_it_cannot_loop_forever():
    decision = retry_decision(DatabaseConflict("deadlock detected"), claimed=("t7",), max_attempts=5)
    assert (decision.action, decision.max_attempts) == (RetryAction.CHARGE, 5)


def test_data_postgresql_refuses_rejects_the_ticket_at_the_first_attempt():
    refused = DataRejected("insert", sqlstate="54000", reason="54000 program_limit_exceeded: index row too big")
    decision = retry_decision(refused, claimed=("t7",), max_attempts=3)
    assert (decision.action, decision.ticket_id, decision.max_attempts) == (RetryAction.CHARGE, "t7", 1)
    assert decision.error == "PostgreSQL refused the ticket's data: 54000 program_limit_exceeded: index row too big"


def test_a_failure_before_anything_was_claimed_belongs_to_no_ticket():
    assert retry_decision(RuntimeError("claim failed"), claimed=(), max_attempts=3).action is RetryAction.RAISE


def test_the_parser_error_type_is_what_plan_batch_treats_as_a_rejection():
    def parse_raising(_body: bytes):
        raise TicketParseError("line 1: nope")

    ticket = claimed(1, b"x")
    plan = plan_batch([ticket], {ticket.id: body_digest(b"x")}, {}, parse_raising)
    assert (plan.outcomes["t1"].status, plan.outcomes["t1"].error) == ("rejected", "line 1: nope")


def test_lines_are_counted_as_the_parser_breaks_them_whatever_the_line_ending():
    """A body of bare carriage returns must cost its lines too: counting only \n would
    let a 50,000-line ticket pass as one line."""
    rows = [f"p{i},P{i},1.00" for i in range(7)]
    for ending in ("\n", "\r\n", "\r"):
        body = ending.join(["Order: 1", "", "product,product_id,price", *rows]).encode()
        assert body_lines(body) == len(rows) + 3
    assert body_lines(b"") == 1
    assert body_lines("a\nb\n".encode("utf-16")) == 3


def test_a_ticket_that_killed_the_worker_enough_times_is_rejected_without_being_parsed():
    body = ticket_body("1", ("Tea", "T1", "1.50"))
    killer = ClaimedTicket(id="t1", received_at=NOW, body=body, crashes=3)
    survivor = ClaimedTicket(id="t2", received_at=NOW, body=ticket_body("2", ("Tea", "T1", "1.50")), crashes=2)

    def parse_only_the_survivor(data: bytes):
        assert data == survivor.body
        return parse_ticket(data)

    digests = {ticket.id: body_digest(ticket.body) for ticket in (killer, survivor)}
    plan = plan_batch([killer, survivor], digests, {}, parse_only_the_survivor, max_crashes=3)

    assert plan.outcomes["t1"].status == "rejected"
    assert plan.outcomes["t1"].error == "worker died 3 times while processing this ticket"
    assert [ticket.id for ticket, _, _ in plan.parsed] == ["t2"]
    assert crash_rejection(2, 3) is None
    assert crash_rejection(4, 3) == "worker died 4 times while processing this ticket"
