"""Archive, purge and restore on a real database: the round trip keeps every byte and
outcome, purge refuses what it must and says which day, restore stores each ticket once
and refuses a file that does not match its manifest."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from datetime import date, datetime, time, timedelta, timezone

import psycopg2
import pytest

from myticket.archive.commands import ArchiveError, archive_before, purge_before, restore_paths
from myticket.archive.format import day_file_name, decode_ticket, encode_ticket
from myticket.core.domain import ArchivedTicket, IncomingTicket
from myticket.core.ids import new_delivery_id
from myticket.telemetry.metrics import Metrics
from myticket.db.repository import Repository
from myticket.web.typedefs import REPOSITORY
from myticket.worker.loop import TicketWorker

from ..database import SUPPORT_QUERIES
from ..helpers import post, settled, ticket_with
from ..paths import CP1252_TICKET, PROJECT_ROOT, REFERENCE_TICKET

UTC = timezone.utc


def snapshots(db) -> dict[str, tuple]:
    """Every stored ticket's whole state by id, bodies as bytes."""
    return {
        row[0]: (*row[:3], bytes(row[3]), *row[4:14], None if row[14] is None else bytes(row[14]), *row[15:])
        for row in db.rows("ticket_snapshots")
    }


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def day_row_counts(db, day: date) -> tuple:
    return db.rows("day_row_counts", {"lower": midnight(day), "upper": midnight(day + timedelta(days=1))})[0]


def myticket(database_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "myticket", *args],
        cwd=PROJECT_ROOT, env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
async def operator(database_url, db):
    """A repository of its own, as `myticket archive|purge|restore` has in its process:
    what it does is not known to the app's partition cache."""
    repository = await Repository.connect(database_url)
    yield repository
    await repository.close()


async def test_archive_purge_restore_round_trip(client, operator, db, tmp_path):
    today = datetime.now(UTC).date()
    old_day = date(2021, 5, 4)
    not_a_ticket = b"not a ticket \xff\x00\r\n\x80 at all"
    ids = [await post(client, body) for body in (REFERENCE_TICKET, CP1252_TICKET, not_a_ticket)]
    ids.append(await post(client, REFERENCE_TICKET))  # after the first: its duplicate
    old = ticket_with("9", "OLD1", "Old thing", "4.20", received_at=midnight(old_day) + timedelta(hours=10))
    await client.server.app[REPOSITORY].store_tickets(tickets=[old])
    ids.append(old.id)
    results = [await settled(client, ticket_id) for ticket_id in ids]
    assert [result["status"] for result in results] == ["processed", "processed", "rejected", "duplicate",
                                                        "processed"]
    before = snapshots(db)
    catalogue = db.rows("product_rows")
    assert len(before) == 5 and catalogue

    archived = await archive_before(operator, before=today + timedelta(days=1), directory=tmp_path / "archive")

    by_day = {entry.day: entry for entry in archived}
    assert by_day[today].tickets == 4 and by_day[old_day].tickets == 1
    assert by_day[today].file == tmp_path / "archive" / f"tickets-{today.isoformat()}.jsonl.gz"

    purged = await purge_before(operator, before=today + timedelta(days=1), require_archive=True)

    assert [day for day in purged if not day.purged] == []
    assert {today, old_day} <= {day.day for day in purged}
    assert db.value("count_tickets") == 0
    assert today not in await operator.day_partitions()
    assert db.rows("product_rows") == catalogue  # the catalogue outlives its tickets

    # The app still believes today's partitions exist: its insert fails for want of
    # one, and the on-demand path makes them again.
    arriving = await post(client, b"Order: 5\nTotal: 1.00\n\nproduct,product_id,price\nPen,PEN1,1.00\n")
    assert (await settled(client, arriving))["status"] == "processed"
    assert db.rows("ticket_delivery", {"id": arriving})[0][3] == "processed"

    report = await restore_paths(operator, [tmp_path / "archive"])

    assert (report.tickets_read, report.stored, report.already_present) == (5, 5, 0)
    after = snapshots(db)
    del after[arriving]
    assert after == before

    # Reprocessing a restored processed ticket parses it again: its outcome, lines and
    # digest make way, and come back the same.
    assert await operator.requeue(statuses=("processed",), since=None, ticket_id=ids[0]) == 1
    assert (await settled(client, ids[0]))["status"] == "processed"
    reparsed = snapshots(db)[ids[0]]
    assert reparsed[4] == "processed" and reparsed[7:] == before[ids[0]][7:]
    assert reparsed[16] == before[ids[0]][16]  # the lines


async def test_restore_twice_stores_each_ticket_once(quiet_app, operator, db, tmp_path):
    day = date(2021, 6, 1)
    tickets = [ticket_with(str(n), f"P{n}", "Thing", "1.00", received_at=midnight(day) + timedelta(minutes=n))
               for n in range(7)]
    await operator.store_tickets(tickets=tickets)
    await TicketWorker(operator, Metrics()).drain()
    before = snapshots(db)
    # Pages of 2 tickets: the day is read in several keyset pages.
    await archive_before(operator, before=day + timedelta(days=1), directory=tmp_path, page_tickets=2)
    assert [entry.purged for entry in await purge_before(operator, before=day + timedelta(days=1),
                                                         require_archive=True) if entry.day == day] == [True]

    first = await restore_paths(operator, [tmp_path / f"tickets-{day.isoformat()}.jsonl.gz"], batch_tickets=3)
    second = await restore_paths(operator, [tmp_path])

    assert (first.stored, first.already_present) == (7, 0)
    assert second.stored == 0 and second.already_present == second.tickets_read >= 7
    assert snapshots(db) == before


async def test_restore_refuses_a_file_that_does_not_match_its_manifest(quiet_app, operator, db, tmp_path):
    day = date(2021, 6, 2)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day))])
    [entry] = [entry for entry in await archive_before(operator, before=day + timedelta(days=1), directory=tmp_path)
               if entry.day == day]
    other_day_file = tmp_path / "tickets-2021-06-03.jsonl.gz"
    other_day_file.write_bytes(gzip.compress(b"", mtime=0))  # not listed: not complete
    content = bytearray(entry.file.read_bytes())
    content[-5] ^= 0xFF
    entry.file.write_bytes(bytes(content))
    stored_before = db.value("count_tickets")

    with pytest.raises(ArchiveError, match="tickets-2021-06-02.jsonl.gz: its SHA-256 is not the one"):
        await restore_paths(operator, [entry.file])
    with pytest.raises(ArchiveError, match="tickets-2021-06-03.jsonl.gz: not listed in"):
        await restore_paths(operator, [other_day_file])
    refused = myticket(db.url, "restore", str(tmp_path))
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith("myticket: restore: ")
    assert "Traceback" not in refused.stderr
    assert db.value("count_tickets") == stored_before


async def test_purge_refuses_pending_and_unarchived_days_and_names_them(quiet_app, operator, db, tmp_path):
    pending_day, unarchived_day, outdated_day = date(2021, 7, 1), date(2021, 7, 2), date(2021, 7, 3)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(outdated_day))])
    await TicketWorker(operator, Metrics()).drain()
    await archive_before(operator, before=outdated_day + timedelta(days=1), directory=tmp_path)
    # A ticket arriving for the day after its archive: the archive no longer holds the day.
    await operator.store_tickets(tickets=[ticket_with("2", "P2", "B", "2.00", received_at=midnight(outdated_day))])
    await operator.store_tickets(tickets=[ticket_with("3", "P3", "C", "3.00", received_at=midnight(unarchived_day))])
    await TicketWorker(operator, Metrics()).drain()
    await operator.store_tickets(tickets=[ticket_with("4", "P4", "D", "4.00", received_at=midnight(pending_day))])

    result = myticket(db.url, "purge", "--before", "2021-07-04")

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert "2021-07-01: refused: pending: 1 tickets of this day are not processed yet" in lines
    assert "2021-07-02: refused: not archived" in lines
    assert any(line.startswith("2021-07-03: refused: archive outdated") for line in lines)
    for day in (pending_day, unarchived_day, outdated_day):
        assert day in await operator.day_partitions()
    assert db.value("count_tickets") == 4

    # --without-archive drops what has no archive, never what is pending.
    purged = {entry.day: entry for entry in await purge_before(operator, before=date(2021, 7, 4),
                                                               require_archive=False)}
    assert purged[pending_day].purged is False and purged[pending_day].reason.startswith("pending")
    assert purged[unarchived_day].purged and purged[outdated_day].purged
    assert db.value("count_tickets") == 1


async def test_archive_file_is_readable_and_the_same_bytes_twice(quiet_app, operator, db, tmp_path):
    day = date(2021, 8, 9)
    ticket_id, received_at = new_delivery_id(midnight(day) + timedelta(hours=3, microseconds=0))
    body = b"Order: 1\nVAT: 0.10\nTotal: 1.10\n\nproduct,product_id,price\nTea,TEA1,1.10\n"
    await operator.store_tickets(tickets=[IncomingTicket(ticket_id, received_at, "text/plain", body)])
    await TicketWorker(operator, Metrics()).drain()

    [first] = [entry for entry in await archive_before(operator, before=day + timedelta(days=1),
                                                       directory=tmp_path) if entry.day == day]
    first_bytes = first.file.read_bytes()
    [second] = [entry for entry in await archive_before(operator, before=day + timedelta(days=1),
                                                        directory=tmp_path) if entry.day == day]

    assert second.file.read_bytes() == first_bytes and second.sha256 == first.sha256
    [record] = [json.loads(line) for line in gzip.decompress(first_bytes).splitlines()]
    assert record["id"] == ticket_id and record["status"] == "processed"
    assert record["received_at"] == received_at.isoformat(timespec="microseconds")
    assert (record["vat"], record["total"], record["order_ref"]) == ("0.10", "1.10", "1")
    # line_number is the line of the body it was read from.
    assert record["lines"] == [{"line_number": 6, "product_id": "TEA1", "name": "Tea", "price": "1.10"}]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "myticket-archive/1"
    assert manifest["days"][day.isoformat()]["sha256"] == first.sha256
    assert manifest["days"][day.isoformat()]["statuses"] == {"processed": 1}
    assert not [path for path in tmp_path.iterdir() if ".partial-" in path.name]


async def test_purge_of_a_locked_day_is_try_again_later_and_the_day_stays(quiet_app, operator, db, tmp_path):
    day = date(2021, 10, 5)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day))])
    await TicketWorker(operator, Metrics()).drain()
    holder = psycopg2.connect(db.url)
    try:
        with holder.cursor() as cur:
            cur.execute(SUPPORT_QUERIES["share_lock_ticket_lines"])  # a reader in a long transaction

        result = myticket(db.url, "purge", "--before", "2021-10-06", "--without-archive", "--lock-timeout", "0.2")
    finally:
        holder.rollback()
        holder.close()

    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"{day}: refused: busy: its tables stayed locked by other sessions for 0.2 s; try again later"
            in result.stdout.splitlines())
    assert day in await operator.day_partitions()
    assert day_row_counts(db, day) == (1, 1, 1, 1)


async def test_a_pending_ticket_restored_into_an_empty_database_is_queued_again(quiet_app, operator, db, tmp_path):
    day = date(2021, 11, 2)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day))])
    await TicketWorker(operator, Metrics()).drain()
    waiting = ticket_with("2", "P2", "B", "2.00", received_at=midnight(day) + timedelta(hours=1))
    await operator.store_tickets(tickets=[waiting])
    before = snapshots(db)
    assert before[waiting.id][4] == "pending"
    await archive_before(operator, before=day + timedelta(days=1), directory=tmp_path)
    db.rows("reset_tables")  # another database, or this one after a loss

    report = await restore_paths(operator, [tmp_path / day_file_name(day)])

    assert report.stored == 2
    assert snapshots(db) == before
    await TicketWorker(operator, Metrics()).drain()
    assert snapshots(db)[waiting.id][4] == "processed"


async def test_archive_refuses_a_directory_whose_manifest_is_not_json_before_writing_a_day_file(
    quiet_app, operator, db, tmp_path
):
    day = date(2021, 12, 1)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day))])
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "manifest.json").write_text("{not json")

    with pytest.raises(ArchiveError, match="manifest.json: manifest.json is not JSON"):
        await archive_before(operator, before=day + timedelta(days=1), directory=archive)

    assert sorted(path.name for path in archive.iterdir()) == [".archive.lock", "manifest.json"]
    assert (archive / "manifest.json").read_text() == "{not json"


def day_file_lines(path) -> dict[str, bytes]:
    return {json.loads(line)["id"]: line for line in gzip.decompress(path.read_bytes()).splitlines()}


async def test_archiving_a_purged_day_again_merges_its_file_with_what_the_database_holds_now(
    quiet_app, operator, db, tmp_path
):
    day = date(2022, 1, 10)
    before = day + timedelta(days=1)
    archive = tmp_path / "archive"
    await operator.store_tickets(tickets=[
        ticket_with(str(n), f"P{n}", "Thing", f"{n}.00", received_at=midnight(day) + timedelta(minutes=n))
        for n in range(30)
    ])
    await TicketWorker(operator, Metrics()).drain()
    originals = snapshots(db)
    [first] = [entry for entry in await archive_before(operator, before=before, directory=archive)
               if entry.day == day]
    first_lines = day_file_lines(first.file)
    assert [entry.purged for entry in await purge_before(operator, before=before, require_archive=True)
            if entry.day == day] == [True]

    # A third of the day comes back, one of them pending again (its outcome will
    # change), and a late ticket arrives for the day.
    archived = [decode_ticket(line + b"\n") for line in first_lines.values()]
    back = sorted(archived, key=lambda ticket: ticket.id)[::3]
    changed = dataclasses.replace(back[0], status="pending", processed_at=None, order_ref=None, vat=None,
                                  total=None, headers=None, text_encoding=None, body_sha256=None, lines=())
    assert await operator.restore_tickets(tickets=[changed, *back[1:]]) == 10
    late = ticket_with("late", "LATE", "Late", "9.00", received_at=midnight(day) + timedelta(hours=20))
    await operator.store_tickets(tickets=[late])
    await TicketWorker(operator, Metrics()).drain()
    reprocessed = snapshots(db)[changed.id]
    assert reprocessed[5] != originals[changed.id][5]  # a new processed_at: the database's version differs

    # Small pages and batches: the merge interleaves both sides across many of them.
    [second] = [entry for entry in await archive_before(operator, before=before, directory=archive, page_tickets=4)
                if entry.day == day]

    assert second.refused is None and second.tickets == 31
    lines = day_file_lines(second.file)
    assert set(lines) == set(first_lines) | {late.id}
    assert list(lines) == sorted(lines)  # still in id order
    for ticket_id, line in first_lines.items():
        if ticket_id != changed.id:
            assert lines[ticket_id] == line  # the previous file's line, byte for byte
    assert json.loads(lines[changed.id])["processed_at"] == reprocessed[5].isoformat(timespec="microseconds")
    manifest = json.loads((archive / "manifest.json").read_text())["days"][day.isoformat()]
    assert (manifest["tickets"], manifest["statuses"], manifest["sha256"]) == (31, {"processed": 31}, second.sha256)
    # The note counts the day's database tickets: what purge compares with the day.
    assert [row[:3] for row in db.rows("archived_day_rows") if row[0] == day] == [(day, 11, 0)]

    assert [entry.purged for entry in await purge_before(operator, before=before, require_archive=True)
            if entry.day == day] == [True]
    report = await restore_paths(operator, [archive / day_file_name(day)])

    assert (report.tickets_read, report.stored) == (31, 31)
    restored = {ticket_id: row for ticket_id, row in snapshots(db).items() if ticket_id in lines}
    assert restored.pop(late.id)[3] == late.body
    assert restored.pop(changed.id) == reprocessed
    assert restored == {ticket_id: row for ticket_id, row in originals.items()
                        if ticket_id in first_lines and ticket_id != changed.id}


async def test_archive_refuses_a_day_whose_listed_file_is_damaged_and_leaves_it_as_it_was(
    quiet_app, operator, db, tmp_path
):
    day, other_day = date(2022, 2, 1), date(2022, 2, 2)
    archive = tmp_path / "archive"
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day)),
                                          ticket_with("2", "P2", "B", "2.00", received_at=midnight(other_day))])
    await TicketWorker(operator, Metrics()).drain()
    await archive_before(operator, before=day + timedelta(days=1), directory=archive)
    damaged = bytearray((archive / day_file_name(day)).read_bytes())
    damaged[-5] ^= 0xFF
    (archive / day_file_name(day)).write_bytes(bytes(damaged))

    result = myticket(db.url, "archive", "--before", "2022-02-03", "--to", str(archive))

    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"2022-02-01: refused: {archive / day_file_name(day)}: its SHA-256 is not the one")
               for line in lines), lines
    assert any(line.startswith("2022-02-02: 1 tickets archived to") for line in lines), lines
    assert (archive / day_file_name(day)).read_bytes() == bytes(damaged)
    (archive / day_file_name(day)).unlink()  # listed but gone: refused too, never written afresh
    [refused] = [entry for entry in await archive_before(operator, before=date(2022, 2, 3), directory=archive)
                 if entry.day == day]
    assert refused.refused is not None and "listed in manifest.json but cannot be read" in refused.refused
    assert not (archive / day_file_name(day)).exists()


async def test_purge_refuses_a_day_whose_archive_file_is_gone_or_changed(quiet_app, operator, db, tmp_path):
    gone_day, changed_day = date(2022, 3, 1), date(2022, 3, 2)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(gone_day)),
                                          ticket_with("2", "P2", "B", "2.00", received_at=midnight(changed_day))])
    await TicketWorker(operator, Metrics()).drain()
    gone, kept = tmp_path / "gone", tmp_path / "kept"
    await archive_before(operator, before=changed_day, directory=gone)
    await archive_before(operator, before=changed_day + timedelta(days=1), directory=kept)
    # The second archive noted both days in `kept`; put the first day's note back on `gone`.
    await archive_before(operator, before=changed_day, directory=gone)
    shutil.rmtree(gone)
    changed_file = kept / day_file_name(changed_day)
    changed_file.write_bytes(gzip.compress(gzip.decompress(changed_file.read_bytes()) + b"\n", mtime=0))

    result = myticket(db.url, "purge", "--before", "2022-03-03")

    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert f"2022-03-01: refused: archive missing: {gone.resolve() / day_file_name(gone_day)} is gone" in lines
    assert (f"2022-03-02: refused: archive changed: the SHA-256 of {changed_file.resolve()} is not the one archived"
            in lines)
    assert {gone_day, changed_day} <= set(await operator.day_partitions())
    assert day_row_counts(db, gone_day)[0] == 1 and day_row_counts(db, changed_day)[0] == 1

    # Dropped without archive, then made again empty (as maintenance does): a day with
    # nothing to lose goes, its missing file notwithstanding.
    await purge_before(operator, before=changed_day, require_archive=False)
    await operator.create_day_partitions(days=[gone_day])
    purged = {entry.day: entry for entry in await purge_before(operator, before=changed_day, require_archive=True)}
    assert purged[gone_day].purged


async def test_restore_refuses_a_line_over_the_cap_naming_file_and_line(quiet_app, operator, db, tmp_path):
    day = date(2022, 4, 1)
    small = ArchivedTicket(id=str(new_delivery_id(midnight(day))[0]), received_at=midnight(day),
                           content_type="text/plain", body=b"small", status="pending")
    large = dataclasses.replace(small, id=str(new_delivery_id(midnight(day) + timedelta(hours=1))[0]),
                                received_at=midnight(day) + timedelta(hours=1), body=b"x" * 5000)
    path = tmp_path / day_file_name(day)
    path.write_bytes(gzip.compress(encode_ticket(small) + encode_ticket(large), mtime=0))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(
        {"format": "myticket-archive/1", "days": {day.isoformat(): {"file": path.name, "sha256": digest}}}))
    stored_before = db.value("count_tickets")

    with pytest.raises(ArchiveError, match=rf"{path.name}, line 2: longer than 4096 bytes"):
        await restore_paths(operator, [path], max_line_bytes=4096)

    assert db.value("count_tickets") == stored_before
    report = await restore_paths(operator, [path], max_line_bytes=len(encode_ticket(large)))
    assert report.stored == 2


async def test_restore_of_a_huge_line_stops_at_the_cap_without_reading_the_line_whole(operator, db, tmp_path):
    path = tmp_path / "tickets-2022-04-02.jsonl.gz"
    with gzip.GzipFile(path, "wb", mtime=0) as file:
        for _ in range(32):
            file.write(b"x" * (1024 * 1024))  # one line of 32 MiB, no newline
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "myticket-archive/1", "days": {
        "2022-04-02": {"file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}}))

    tracemalloc.start()
    try:
        with pytest.raises(ArchiveError, match=rf"{path.name}, line 1: longer than 1048576 bytes"):
            await restore_paths(operator, [path], max_line_bytes=1024 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024


async def test_archive_to_a_file_and_restore_of_a_device_are_one_clear_line(quiet_app, db, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a directory")

    archived = myticket(db.url, "archive", "--before", "2021-01-01", "--to", str(a_file))
    restored = myticket(db.url, "restore", "/dev/zero")

    assert archived.returncode == 1 and restored.returncode == 1
    assert archived.stderr.splitlines()[-1] == f"myticket: archive: {a_file}: is a file, not a directory"
    assert restored.stderr.splitlines()[-1] == (
        "myticket: restore: /dev/zero: not a regular file or a directory, so not an archive file")
    assert a_file.read_text() == "not a directory"


async def test_archive_files_are_private_to_their_owner_whatever_the_umask(quiet_app, operator, db, tmp_path):
    day = date(2022, 5, 1)
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day))])
    archive = tmp_path / "made" / "archive"
    kept = tmp_path / "kept"
    kept.mkdir(mode=0o755)
    previous = os.umask(0)
    try:
        await archive_before(operator, before=day + timedelta(days=1), directory=archive)
        await archive_before(operator, before=day + timedelta(days=1), directory=kept)
    finally:
        os.umask(previous)

    def mode(path) -> int:
        return stat.S_IMODE(path.stat().st_mode)

    assert mode(archive) == mode(archive.parent) == 0o700  # the parents it made too
    for directory in (archive, kept):
        assert mode(directory / day_file_name(day)) == 0o600
        assert mode(directory / "manifest.json") == 0o600
        assert mode(directory / ".archive.lock") == 0o600
    assert mode(kept) == 0o755  # a directory archive did not make keeps its mode


async def test_an_archive_stopped_between_manifest_and_rename_is_finished_by_the_next_one(
    quiet_app, operator, db, tmp_path
):
    day = date(2022, 6, 1)
    before = day + timedelta(days=1)
    archive = tmp_path / "archive"
    await operator.store_tickets(tickets=[ticket_with("1", "P1", "A", "1.00", received_at=midnight(day))])
    await TicketWorker(operator, Metrics()).drain()
    await archive_before(operator, before=before, directory=archive)
    day_file = archive / day_file_name(day)
    previous = day_file.read_bytes()
    late = ticket_with("2", "P2", "B", "2.00", received_at=midnight(day) + timedelta(hours=1))
    await operator.store_tickets(tickets=[late])
    await TicketWorker(operator, Metrics()).drain()
    await archive_before(operator, before=before, directory=archive)
    # The state a kill -9 leaves after the manifest is written, before the rename: the
    # manifest lists the new file, which is still a partial; the old file has the name.
    day_file.rename(archive / f".{day_file.name}.partial-999999")
    day_file.write_bytes(previous)

    [entry] = [entry for entry in await archive_before(operator, before=before, directory=archive)
               if entry.day == day]

    assert entry.refused is None and entry.tickets == 2
    assert late.id in day_file_lines(day_file)
    assert not [path for path in archive.iterdir() if ".partial-" in path.name]
    assert [result.purged for result in await purge_before(operator, before=before, require_archive=True)
            if result.day == day] == [True]
