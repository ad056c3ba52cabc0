"""Restore takes only what archive writes: an id is stored once whatever time it comes
with, and lines that would hide or break other tickets are refused, naming the line.
And archive never replaces a day file it cannot account for."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from myticket.archive.commands import ArchiveError, archive_before, restore_paths
from myticket.archive.format import DayEntry, day_file_name, encode_manifest, encode_ticket, merged_manifest
from myticket.core.domain import ArchivedTicket
from myticket.db.repository import Repository

from ..paths import PROJECT_ROOT
from ..helpers import ticket_with

DAY = date(2026, 3, 14)
NOON = datetime(2026, 3, 14, 12, 0, tzinfo=timezone.utc)


def crafted_archive(directory: Path, day: date, lines: list[bytes]) -> Path:
    """A day file of these lines with a manifest that lists it, as anyone who can write
    to the directory can make one: the manifest is a checksum, not a signature."""
    directory.mkdir(exist_ok=True)
    content = gzip.compress(b"".join(lines), mtime=0)
    path = directory / day_file_name(day)
    path.write_bytes(content)
    entry = DayEntry(file=path.name, tickets=len(lines), statuses={}, bytes=len(content),
                     sha256=hashlib.sha256(content).hexdigest(), archived_at="2026-03-15T00:00:00+00:00")
    (directory / "manifest.json").write_bytes(encode_manifest(merged_manifest(None, day, entry)))
    return path


def pending(ticket_id: str, received_at: datetime, body: bytes) -> ArchivedTicket:
    return ArchivedTicket(id=ticket_id, received_at=received_at, content_type="text/plain", body=body, status="pending")


@pytest.fixture
async def operator(database_url, db):
    repository = await Repository.connect(database_url)
    yield repository
    await repository.close()


async def test_an_id_already_stored_on_another_day_or_twice_in_a_file_is_stored_once(operator, db, tmp_path):
    stored = ticket_with("1", "P1", "A", "1.00", received_at=NOON - timedelta(days=3))  # a random (v4) id
    await operator.store_tickets(tickets=[stored])
    again = str(uuid.uuid4())
    path = crafted_archive(tmp_path / "a", DAY, [
        encode_ticket(pending(stored.id, NOON, b"forged")),
        encode_ticket(pending(again, NOON, b"first")),
        encode_ticket(pending(again, NOON + timedelta(hours=1), b"second")),
    ])

    report = await restore_paths(operator, [path])

    assert (report.tickets_read, report.stored, report.already_present) == (3, 1, 2)
    assert sorted(db.rows("stored_ids")) == sorted([(stored.id,), (again,)])
    assert bytes(db.rows("ticket_delivery", {"id": stored.id})[0][1]) == stored.body
    assert bytes(db.rows("ticket_delivery", {"id": again})[0][1]) == b"first"


@pytest.mark.parametrize("field, value, why", [
    ("body_sha256", hashlib.sha256(b"another ticket's bytes").hexdigest(), "body_sha256 is not the SHA-256 of the body"),
    ("received_at", "0001-01-01T00:00:00+00:00", "is not between 2000-01-01 and 2200-01-01"),
    ("id", "01a218c4-d7f4-7521-8189-e75f8ba3cd23", "is not the time its UUIDv7 id carries"),
])
async def test_a_line_that_would_hide_or_break_tickets_is_refused_naming_it(operator, db, tmp_path, field, value, why):
    good = encode_ticket(pending(str(uuid.uuid4()), NOON, b"good"))
    processed = ArchivedTicket(id=str(uuid.uuid4()), received_at=NOON, content_type=None, body=b"junk",
                               status="processed", body_sha256=hashlib.sha256(b"junk").digest())
    record = {**json.loads(encode_ticket(processed)), field: value}
    path = crafted_archive(tmp_path / "a", DAY, [good, json.dumps(record).encode() + b"\n"])

    with pytest.raises(ArchiveError, match=f"line 2: .*{why}"):
        await restore_paths(operator, [path])

    assert db.value("count_tickets") == 0


async def test_a_line_of_another_day_or_a_body_over_the_limit_refuses_its_file(operator, db, tmp_path):
    other_day = encode_ticket(pending(str(uuid.uuid4()), NOON + timedelta(days=2), b"elsewhere"))
    with pytest.raises(ArchiveError, match=r"line 1: received_at .* is not in the file's day"):
        await restore_paths(operator, [crafted_archive(tmp_path / "a", DAY, [other_day])])

    large = encode_ticket(pending(str(uuid.uuid4()), NOON, b"x" * 2048))
    with pytest.raises(ArchiveError, match="line 1: a body of 2048 bytes, over MYTICKET_MAX_BODY_BYTES"):
        await restore_paths(operator, [crafted_archive(tmp_path / "b", DAY, [large])], max_body_bytes=1024)
    assert db.value("count_tickets") == 0


async def test_archive_never_replaces_a_day_file_its_manifest_does_not_list(operator, db, tmp_path):
    """A second trial moved manifest.json away: the next archive of a day that had come
    back with one late ticket replaced a file of 30,000 tickets with a file of one."""
    directory = tmp_path / "archive"
    path = crafted_archive(directory, DAY, [encode_ticket(pending(str(uuid.uuid4()), NOON, b"kept"))])
    before = path.read_bytes()
    (directory / "manifest.json").unlink()
    await operator.store_tickets(tickets=[ticket_with("late", "P1", "Late", "1.00", received_at=NOON)])

    archived = await archive_before(operator, before=DAY + timedelta(days=1), directory=directory)

    [day] = [result for result in archived if result.day == DAY]

    assert day.refused is not None and "does not list it" in day.refused
    assert path.read_bytes() == before


async def test_a_restore_stopped_by_a_refused_line_says_what_it_stored_before_it(operator, db, tmp_path):
    """1,200 good lines, then one of another day: the first 1,000 (whole batches) are
    stored, and the refusal says so, so that the operator knows where restore stands."""
    good = [encode_ticket(pending(str(uuid.uuid4()), NOON, b"ticket %d" % n)) for n in range(1200)]
    other_day = encode_ticket(pending(str(uuid.uuid4()), NOON + timedelta(days=2), b"elsewhere"))
    path = crafted_archive(tmp_path / "a", DAY, [*good, other_day])

    with pytest.raises(ArchiveError, match="line 1201: received_at .* is not in the file's day") as stopped:
        await restore_paths(operator, [path], batch_tickets=500)

    assert db.value("count_tickets") == 1000
    message = str(stopped.value)
    assert "1000 tickets stored before it: the first 1000 tickets of its file (1000 stored" in message
    # Run again (the command, as an operator would): what was stored is counted as
    # already present, and the same line stops it, in one line that says so.
    again = subprocess.run(
        [sys.executable, "-m", "myticket", "restore", str(path)], cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_URL": db.url, "LOG_LEVEL": "WARNING"}, capture_output=True, text=True, timeout=120,
    )
    assert again.returncode == 1
    [line] = again.stderr.strip().splitlines()
    assert line.startswith("myticket: restore: ") and "line 1201:" in line, line
    assert "0 tickets stored before it: the first 1000 tickets of its file (0 stored, the others already present)" in line
    assert db.value("count_tickets") == 1000
