"""Archive, purge and restore whole days of tickets (`myticket archive|purge|restore`,
and the service's retention).

- `archive_before` writes each day that has partitions before a date to its own file
  (format in `format`), merged with the day's previous complete file when the
  directory has one (a purged day archived again keeps every ticket). Atomically: the
  manifest is read first; a hidden temporary file is written, flushed and fsynced; the
  manifest listing its digest is written likewise (the commit); the file is renamed and
  the directory fsynced; then the day is noted in `archived_days`. A crash leaves at
  most a hidden partial file, which the next archive puts in place when the manifest
  lists it, or removes. Files are private (0600, a directory archive makes 0700). The
  day is read by keyset pages in short snapshots, so nothing holds back vacuum for the
  length of a day.
- `purge_before` drops each day's partitions in a transaction of its own (all of the
  day or none of it), which the database refuses for a day with pending tickets or,
  unless told otherwise, one whose archive does not hold every ticket; it first checks
  that the archive file noted for the day is still there, listed and unchanged.
- `restore_paths` checks each file against its manifest, then loads it back in
  byte-bounded batches, each line read with a byte cap; a ticket already stored is
  left as it is.

File work (compressing, hashing, fsync) runs in threads: the service's event loop
keeps answering while its retention archives a day. The line format and manifest are in
`format`, durable private files and the check against the manifest in `files`, the
day files' reader and writer in `day_files`, the merge of a day archived again in `merge`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from .day_files import MAX_LINE_BYTES, ArchiveReader, DayFileWriter, ExistingDayFile, day_files_named
from .errors import ArchiveError, DayRefused
from .files import (
    Mismatch,
    check_listed,
    directory_lock,
    fsync_directory,
    listed_digest,
    make_directory,
    read_manifest,
    write_atomically,
)
from .format import (
    MANIFEST_NAME,
    DayEntry,
    day_file_name,
    days_before,
    encode_manifest,
    final_file_name,
    is_day_file_name,
    is_partial_file_name,
    merged_manifest,
)
from .merge import DayMerge
from ..core.database_errors import DatabaseConflict, DataRejected
from ..core.domain import ArchivedDayNote
from ..db.repository import Repository

__all__ = [
    "ArchiveError", "ArchivedDay", "DayRefused", "PurgedDay", "RestoreReport", "archive_before", "purge_before",
    "restore_paths",
]

log = logging.getLogger(__name__)

# A page of a day being archived: at most this many tickets, and bodies of at most this
# many bytes together (always one ticket, however large).
PAGE_TICKETS = 1000
PAGE_BYTES = 8 * 1024 * 1024
# A batch of a restore: the same bounds, so neither side holds more than a page.
RESTORE_BATCH_TICKETS = 500
RESTORE_BATCH_BYTES = 8 * 1024 * 1024
# How long a purge waits for a day's tables before giving up on it for now: its lock
# request holds every insert queued behind it meanwhile.
PURGE_LOCK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class ArchivedDay:
    day: date
    file: Path
    tickets: int
    sha256: str
    refused: str | None = None  # why the day was not archived (its file is left as it was)


@dataclass(frozen=True)
class PurgedDay:
    day: date
    purged: bool
    reason: str | None  # why not, when refused or absent


@dataclass(frozen=True)
class RestoreReport:
    files: int
    tickets_read: int
    stored: int
    already_present: int


class RestoreStopped(ArchiveError):
    """A restore stopped by a refused line (or data the database refused), saying what
    was stored before it, so that an operator knows where it stands: what is stored
    stays, and a second run counts it as already present."""

    def __init__(
        self, cause: Exception, *, stored: int, file_lines_in: int, file_stored: int, files_done: int,
        files_done_stored: int,
    ) -> None:
        before = f"{files_done} files before it restored whole ({files_done_stored} stored), and " if files_done else ""
        super().__init__(
            f"{' '.join(str(cause).split())}; {stored} tickets stored before it: {before}the first "
            f"{file_lines_in} tickets of its file ({file_stored} stored, the others already present); "
            "what is stored stays, and restore run again once the file is fixed counts it as already present"
        )
        self.stored = stored
        self.file_lines_in = file_lines_in


def _settle_partial_files(directory: Path, manifest: dict[str, Any] | None) -> None:
    """Finish or remove what writers that died left (called holding the directory's
    lock, so no live writer has a partial file there). A partial day file the manifest
    already lists with its digest was stopped between the manifest and its rename: it
    is put in place. Any other is removed."""
    for entry in directory.iterdir():
        if not is_partial_file_name(entry.name):
            continue
        final = directory / final_file_name(entry.name)
        if is_day_file_name(final.name) and check_listed(entry, listed_digest(manifest, final.name)) is None:
            log.warning("putting %s in place as %s: the manifest lists it, its archive stopped before the rename",
                        entry, final)
            os.replace(entry, final)
            fsync_directory(directory)
        else:
            log.warning("removing %s, left by an archive that did not finish", entry)
            entry.unlink()


async def archive_before(
    repository: Repository,
    *,
    before: date,
    directory: Path,
    page_tickets: int = PAGE_TICKETS,
    page_bytes: int = PAGE_BYTES,
) -> list[ArchivedDay]:
    """Write every day with partitions strictly before `before` to `directory` (made if
    missing), one file per day, and note each in `archived_days`. Archiving a day again
    writes it again (the same bytes when its tickets have not changed)."""
    await asyncio.to_thread(make_directory, directory)
    days = days_before(await repository.day_partitions(), before)
    archived = []
    with directory_lock(directory):
        # The manifest first: one archive cannot merge into must not get a day file.
        manifest = await asyncio.to_thread(read_manifest, directory)
        await asyncio.to_thread(_settle_partial_files, directory, manifest)
        for day in days:
            try:
                day_archived, manifest = await _archive_day(repository, day, directory, manifest, page_tickets,
                                                            page_bytes)
            except DayRefused as exc:
                log.warning("did not archive %s: %s", day, exc)
                day_archived = ArchivedDay(day=day, file=directory / day_file_name(day), tickets=0, sha256="",
                                           refused=str(exc))
            archived.append(day_archived)
    return archived


def _complete_day_file(directory: Path, manifest: dict[str, Any] | None, day: date) -> Path | None:
    """The day's file when the manifest lists it (its tickets must be kept: the day may
    have been purged since); None when not listed. DayRefused when it is listed but
    missing, unreadable or changed: archive never overwrites a damaged archive."""
    path = directory / day_file_name(day)
    try:
        mismatch = check_listed(path, listed_digest(manifest, path.name))
    except OSError as exc:
        raise DayRefused(f"{path}: listed in {MANIFEST_NAME} but cannot be read ({exc.strerror}); "
                         "put it back or archive to another directory") from None
    if mismatch is Mismatch.NOT_LISTED:
        if path.exists():
            # Its manifest was lost or edited: the file may hold tickets the database no
            # longer has, and nothing says whether it is whole. Never replaced unread.
            raise DayRefused(f"{path} exists but {MANIFEST_NAME} does not list it (a lost or edited manifest?); "
                             "move it away, or restore it, before archiving this day here")
        return None
    if mismatch is Mismatch.CHANGED:
        raise DayRefused(f"{path}: its SHA-256 is not the one {MANIFEST_NAME} lists; "
                         "archive will not replace a damaged archive file")
    return path


async def _archive_day(
    repository: Repository, day: date, directory: Path, manifest: dict[str, Any] | None, page_tickets: int,
    page_bytes: int,
) -> tuple[ArchivedDay, dict[str, Any]]:
    existing = await asyncio.to_thread(_complete_day_file, directory, manifest, day)
    old = None if existing is None else await asyncio.to_thread(ExistingDayFile, existing, MAX_LINE_BYTES)
    try:
        writer = await asyncio.to_thread(DayFileWriter, directory, day)
        merge = DayMerge(writer, old, page_tickets, page_bytes)
        try:
            after = None
            while True:
                page = await repository.archive_page(day=day, after=after, limit=page_tickets, max_bytes=page_bytes)
                if not page:
                    break
                await merge.add_page(page)
                after = (page[-1].id, page[-1].received_at)
            await merge.finish()
            size, sha256 = await asyncio.to_thread(writer.close)
            statuses = merge.statuses
            tickets = sum(statuses.values())
            entry = DayEntry(
                file=writer.path.name, tickets=tickets, statuses=dict(statuses), bytes=size, sha256=sha256,
                archived_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            manifest = merged_manifest(manifest, day, entry)
            # The manifest is the commit point, written before the file takes its name:
            # a crash between the two leaves a partial file the manifest lists, which the
            # next archive puts in place. (The other order would leave a listed day file
            # with another digest, which archive refuses to replace.)
            await asyncio.to_thread(write_atomically, directory / MANIFEST_NAME, encode_manifest(manifest))
        except BaseException:
            await asyncio.to_thread(writer.abandon)
            raise
    finally:
        if old is not None:
            await asyncio.to_thread(old.close)
    await asyncio.to_thread(writer.put_in_place)
    # The note counts the day's tickets now in the database, all in the file: purge
    # compares them with the day's rows. The file may hold more (tickets purged before).
    await repository.record_archived_day(
        day=day, tickets=sum(merge.database_statuses.values()), pending=merge.database_statuses["pending"],
        file_name=writer.path.name, sha256=sha256, directory=str(directory.resolve()),
    )
    log.info("archived %s: %d tickets (%s) to %s, sha256 %s%s", day, tickets,
             ", ".join(f"{count} {status}" for status, count in sorted(statuses.items())) or "none",
             writer.path, sha256,
             "" if existing is None else f", merged with the {merge.kept} tickets only its previous file held")
    return ArchivedDay(day=day, file=writer.path, tickets=tickets, sha256=sha256), manifest


async def purge_before(
    repository: Repository,
    *,
    before: date,
    require_archive: bool,
    lock_timeout_seconds: float = PURGE_LOCK_TIMEOUT_SECONDS,
) -> list[PurgedDay]:
    """Drop every day with partitions strictly before `before`, each in a transaction of
    its own; a day refused (pending tickets, not archived, archive outdated, its archive
    file missing or changed) or busy (its tables locked past the timeout) is kept, with
    the reason, and the others go on. The catalogue is never touched."""
    results = []
    for day in days_before(await repository.day_partitions(), before):
        try:
            outcome = await _archive_file_problem(repository, day) if require_archive else None
            if outcome is None:
                outcome = await repository.purge_day(
                    day=day, require_archive=require_archive, lock_timeout_seconds=lock_timeout_seconds
                )
        except DatabaseConflict as exc:
            outcome = f"busy: {_conflict(exc, lock_timeout_seconds)}; try again later"
        if outcome == "purged":
            log.info("purged %s: its partitions are dropped", day)
            results.append(PurgedDay(day=day, purged=True, reason=None))
        else:
            log.warning("did not purge %s: %s", day, outcome)
            results.append(PurgedDay(day=day, purged=False, reason=outcome))
    return results


async def _archive_file_problem(repository: Repository, day: date) -> str | None:
    """Why the file archive noted for the day cannot be trusted (gone, unlisted or
    changed since), or None: the note alone says nothing of the file. A day never
    archived is left to the database's own refusal, and an empty day, which has
    nothing to lose, to its own consent."""
    if not await repository.day_holds_tickets(day=day):
        return None
    note = await repository.archived_day(day=day)
    return None if note is None else await asyncio.to_thread(_check_archive_file, note)


def _check_archive_file(note: ArchivedDayNote) -> str | None:
    """The blocking half of `_archive_file_problem` (reads and hashes the file)."""
    directory = Path(note.directory)
    path = directory / note.file_name
    try:
        # The file first, against the digest archived (its manifest must list the same):
        # a file gone is named before a manifest gone.
        file_mismatch = check_listed(path, note.sha256)
        manifest = read_manifest(directory)
    except FileNotFoundError as exc:
        return f"archive missing: {exc.filename} is gone"
    except ArchiveError as exc:
        return f"archive unreadable: {exc}"
    except OSError as exc:
        return f"archive unreadable: {exc.filename}: {exc.strerror}"
    if manifest is None:
        return f"archive missing: {directory / MANIFEST_NAME} is gone, so nothing says {path} is complete"
    if listed_digest(manifest, note.file_name) != note.sha256:
        return f"archive changed: {directory / MANIFEST_NAME} no longer lists {path} with the SHA-256 archived"
    if file_mismatch is not None:
        return f"archive changed: the SHA-256 of {path} is not the one archived"
    return None


def _conflict(exc: DatabaseConflict, lock_timeout_seconds: float) -> str:
    """What kept a purge from its day, in a few words."""
    if "55P03" in str(exc):  # lock_not_available: the lock_timeout ran out
        return f"its tables stayed locked by other sessions for {lock_timeout_seconds:g} s"
    return " ".join(str(exc).split())


def _verify(files: Sequence[Path]) -> None:
    """Refuse, naming it, a file its directory's manifest does not list with its digest:
    an archive that did not finish, or a file changed since."""
    manifests: dict[Path, dict[str, Any]] = {}
    for file in files:
        directory = file.parent
        if directory not in manifests:
            manifest = read_manifest(directory)
            if manifest is None:
                raise ArchiveError(f"{file}: no {MANIFEST_NAME} beside it, so nothing says it is complete")
            manifests[directory] = manifest
        mismatch = check_listed(file, listed_digest(manifests[directory], file.name))
        if mismatch is Mismatch.NOT_LISTED:
            raise ArchiveError(f"{file}: not listed in {directory / MANIFEST_NAME}: not a complete archive file")
        if mismatch is Mismatch.CHANGED:
            raise ArchiveError(f"{file}: its SHA-256 is not the one {directory / MANIFEST_NAME} lists: "
                               "changed or damaged since it was archived")


async def restore_paths(
    repository: Repository,
    paths: Sequence[Path],
    *,
    batch_tickets: int = RESTORE_BATCH_TICKETS,
    batch_bytes: int = RESTORE_BATCH_BYTES,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_body_bytes: int | None = None,
) -> RestoreReport:
    """Load the tickets of these archive files (or of every day file in these
    directories) back, after checking every file against its manifest. Tickets already
    stored are counted, not written again. A line longer than `max_line_bytes` refuses
    its file: a line is decoded whole, so this bounds a restore's memory; so does
    `max_body_bytes` (the service's limit), over which a body refuses its file."""
    files = await asyncio.to_thread(day_files_named, paths)
    await asyncio.to_thread(_verify, files)
    read = stored = 0
    for done, path in enumerate(files):
        reader = await asyncio.to_thread(ArchiveReader, path, max_line_bytes, max_body_bytes)
        file_read = file_stored = 0
        try:
            while batch := await asyncio.to_thread(reader.batch, batch_tickets, batch_bytes):
                file_stored += await repository.restore_tickets(tickets=batch)
                file_read += len(batch)
        except (ArchiveError, DataRejected) as exc:
            raise RestoreStopped(
                exc, stored=stored + file_stored, file_lines_in=file_read, file_stored=file_stored,
                files_done=done, files_done_stored=stored,
            ) from exc
        finally:
            await asyncio.to_thread(reader.close)
        log.info("restored %s: %d tickets read, %d stored, %d already present",
                 path, file_read, file_stored, file_read - file_stored)
        read += file_read
        stored += file_stored
    return RestoreReport(files=len(files), tickets_read=read, stored=stored, already_present=read - stored)
