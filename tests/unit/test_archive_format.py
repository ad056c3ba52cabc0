"""The archive format without a database: a ticket survives encode and decode whole,
the manifest merges days, names of files being written never pass for a day's file,
`--before` takes the days strictly before it, and the commands refuse a bad date."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from myticket.archive.format import (
    FORMAT,
    ArchiveFormatError,
    DayEntry,
    day_file_name,
    days_before,
    decode_ticket,
    encode_ticket,
    final_file_name,
    is_day_file_name,
    is_partial_file_name,
    listed_sha256,
    max_line_bytes_for,
    merged_manifest,
    parse_manifest,
    partial_file_name,
)
from myticket.core.domain import ArchivedTicket
from myticket.core.ids import new_delivery_id
from myticket.core.parser import TicketLine

RECEIVED = datetime(2026, 11, 20, 8, 30, 1, 123000, tzinfo=timezone.utc)
BODY = "Order: 77\nTotal: 3.00\n\nproduct,product_id,price\nCafé crème,CC01,3.00\n".encode("cp1252") + b"\x00\xff"
PROCESSED = ArchivedTicket(
    id=new_delivery_id(RECEIVED)[0],
    received_at=RECEIVED,
    content_type="text/plain; charset=windows-1252",
    body=BODY,
    status="processed",
    processed_at=datetime(2026, 11, 20, 8, 30, 2, 7, tzinfo=timezone.utc),
    attempts=1,
    order_ref="77",
    vat=Decimal("0.50"),
    total=Decimal("3.00"),
    headers={"Store": "Lyon 3", "Order": "77"},
    warnings=("line 7: price has no cents",),
    text_encoding="cp1252",
    body_sha256=hashlib.sha256(BODY).digest(),
    lines=(TicketLine(line_number=6, product_id="CC01", name="Café crème", price=Decimal("3.00")),),
)
PENDING = ArchivedTicket(id="5b0c6f0e-1111-4222-8333-444455556666",
                         received_at=datetime(2026, 11, 20, 23, 59, 59, 999999, tzinfo=timezone.utc),
                         content_type=None, body=b"", status="pending")


@pytest.mark.parametrize("ticket", [PROCESSED, PENDING], ids=["processed", "pending"])
def test_a_ticket_survives_encode_and_decode_whole(ticket):
    line = encode_ticket(ticket)

    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_ticket(line) == ticket


def test_the_record_is_plain_json_with_the_exact_bytes_and_money_as_strings():
    record = json.loads(encode_ticket(PROCESSED))

    assert base64.b64decode(record["body_base64"]) == PROCESSED.body
    assert (record["vat"], record["total"], record["lines"][0]["price"]) == ("0.50", "3.00", "3.00")
    assert record["received_at"] == "2026-11-20T08:30:01.123000+00:00"
    assert record["body_sha256"] == hashlib.sha256(BODY).hexdigest()
    assert list(record)[:5] == ["id", "received_at", "content_type", "body_base64", "status"]


def test_the_same_ticket_gives_the_same_bytes_whatever_the_order_of_its_headers():
    reordered = ArchivedTicket(**{**{name: getattr(PROCESSED, name) for name in PROCESSED.__dataclass_fields__},
                                  "headers": {"Order": "77", "Store": "Lyon 3"}})

    assert encode_ticket(reordered) == encode_ticket(PROCESSED)


@pytest.mark.parametrize("change, message", [
    ({"vat": 0.5}, "money must be a decimal string"),
    ({"body_base64": "not base64!"}, "not an archived ticket"),
    ({"status": "lost"}, "unknown status"),
    ({"received_at": "2026-11-20T08:30:01"}, "no time zone"),
    ({"body_sha256": "00" * 32}, "body_sha256 is not the SHA-256 of the body"),
    ({"received_at": "0001-01-01T00:00:00+00:00"}, "is not between 2000-01-01 and 2200-01-01"),
    ({"received_at": "2026-11-20T08:30:01.124000+00:00"}, "is not the time its UUIDv7 id carries"),
    ({"id": "not-a-uuid"}, "id: not a UUID"),
    # Each of these was stored by restore once, and then failed every archive of its day.
    ({"headers": [1]}, "headers: must be an object"),
    ({"warnings": "abc"}, "warnings: must be a list"),
    ({"order_ref": 123}, "order_ref: must be text"),
    ({"attempts": -5}, "attempts: must be a whole number from 0"),
    ({"total": "NaN"}, "total: not an amount the database holds"),
    ({"total": "1e400"}, "total: not an amount the database holds"),
    ({"duplicate_of": "nobody"}, "id: not a UUID"),
    ({"content_type": "x" * 256}, "content_type: longer than 255"),
    ({"lines": [{"line_number": 1, "product_id": "P\u0000", "name": "N", "price": "1.00"}]}, "product_id: holds a NUL"),
    ({"lines": [{"line_number": 1, "product_id": "P", "name": "N", "price": "1.00"},
                {"line_number": 1, "product_id": "Q", "name": "M", "price": "2.00"}]}, "same line_number"),
])
def test_decode_refuses_what_archive_never_writes(change, message):
    record = {**json.loads(encode_ticket(PROCESSED)), **change}

    with pytest.raises(ArchiveFormatError, match=message):
        decode_ticket(json.dumps(record).encode())


def test_decode_names_a_missing_field():
    record = json.loads(encode_ticket(PROCESSED))
    del record["status"]

    with pytest.raises(ArchiveFormatError, match="lacks the field 'status'"):
        decode_ticket(json.dumps(record).encode())


def entry(sha256: str, tickets: int = 1) -> DayEntry:
    return DayEntry(file="f", tickets=tickets, statuses={"processed": tickets}, bytes=10, sha256=sha256,
                    archived_at="2026-11-26T00:00:00+00:00")


def test_the_manifest_merges_days_and_replaces_a_day_archived_again():
    manifest = merged_manifest(None, date(2026, 11, 21), entry("b"))
    manifest = merged_manifest(manifest, date(2026, 11, 20), entry("a"))
    manifest = merged_manifest(manifest, date(2026, 11, 21), entry("c", tickets=2))

    assert manifest["format"] == FORMAT
    assert list(manifest["days"]) == ["2026-11-20", "2026-11-21"]
    assert manifest["days"]["2026-11-20"]["sha256"] == "a"
    assert manifest["days"]["2026-11-21"] == entry("c", tickets=2).as_json()
    assert parse_manifest(json.dumps(manifest)) == manifest


def test_a_file_counts_only_as_the_manifest_lists_it():
    manifest = merged_manifest(None, date(2026, 11, 20),
                               DayEntry(file=day_file_name(date(2026, 11, 20)), tickets=0, statuses={}, bytes=20,
                                        sha256="abc", archived_at="x"))

    assert listed_sha256(manifest, "tickets-2026-11-20.jsonl.gz") == "abc"
    assert listed_sha256(manifest, "tickets-2026-11-21.jsonl.gz") is None
    with pytest.raises(ArchiveFormatError):
        parse_manifest('{"format": "something else", "days": {}}')


def test_files_being_written_never_pass_for_a_day_file():
    final = day_file_name(date(2026, 11, 20))
    partial = partial_file_name(final, 4242)

    assert final == "tickets-2026-11-20.jsonl.gz" and is_day_file_name(final)
    assert not is_day_file_name(partial) and is_partial_file_name(partial)
    assert fnmatch.filter([partial, partial_file_name("manifest.json", 1)], "tickets-*.jsonl.gz") == []
    assert not is_partial_file_name(final)
    assert final_file_name(partial) == final  # what a partial file becomes once complete


def test_before_takes_the_days_strictly_before_it_oldest_first():
    first = date(2026, 11, 1)
    days = [first + timedelta(days=n) for n in (3, 0, 5, 1, 3)]

    assert days_before(days, date(2026, 11, 4)) == [date(2026, 11, 1), date(2026, 11, 2)]
    assert days_before(days, date(2026, 11, 1)) == []
    assert days_before(days, date(2027, 1, 1)) == [date(2026, 11, n) for n in (1, 2, 4, 6)]


def test_restore_accepts_lines_of_the_largest_accepted_body_in_base64_and_never_caps_under_64_mib():
    mib = 1024 * 1024
    assert max_line_bytes_for(1 * mib) == 64 * mib
    assert max_line_bytes_for(100 * mib) == 216 * mib
    assert max_line_bytes_for(100 * mib) > 100 * mib * 4 // 3 + 1024
