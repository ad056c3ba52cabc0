"""Archive, purge and restore whole days of tickets (`myticket archive|purge|restore`,
and the service's retention).

- `archive_before` writes each day that has partitions before a date to its own file
  (format in `archive_format`), merged with the day's previous complete file when the
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
keeps answering while its retention archives a day.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import gzip
import hashlib
import logging
import os
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import IO, Any

from .format import (
    MANIFEST_NAME,
    ArchiveFormatError,
    DayEntry,
    day_file_name,
    day_of_file_name,
    days_before,
    decode_ticket,
    encode_manifest,
    encode_ticket,
    final_file_name,
    is_day_file_name,
    is_partial_file_name,
    listed_sha256,
    merged_manifest,
    parse_manifest,
    partial_file_name,
)
from ..core.database_errors import DatabaseConflict
from ..core.domain import ArchivedDayNote, ArchivedTicket
from ..core.ids import utc_day
from ..db.repository import Repository

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
# Held (flock) while an archive writes into a directory: two archives never write the
# same manifest at once, and a partial file found while holding it is a crash's leftover.
LOCK_FILE_NAME = ".archive.lock"
# Archive files hold every ticket's body: readable by their owner only, in a directory
# (when archive makes it) only its owner can list.
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700
# The longest line of a day file read back (restore, or the merge of a day archived
# again): a line is decoded whole, so this bounds the memory one ticket takes.
MAX_LINE_BYTES = 64 * 1024 * 1024


class ArchiveError(Exception):
    """Archive or restore cannot go on; the message names the file or directory."""


class DayRefused(ArchiveError):
    """Archive leaves this day as it is (its archive file is damaged); the others go on."""


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


def _fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_private(path: Path) -> IO[bytes]:
    """`path` created (or emptied) for writing, FILE_MODE whatever the umask, before any
    byte is written."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # an older file keeps its mode through O_CREAT
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


def _write_atomically(path: Path, content: bytes) -> None:
    """Replace `path` with `content` so that a crash leaves the old or the new, whole."""
    partial = path.with_name(partial_file_name(path.name, os.getpid()))
    with _open_private(partial) as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    _fsync_directory(path.parent)


class _HashingWriter:
    """A file object that counts and hashes the bytes written through it."""

    def __init__(self, file: IO[bytes]) -> None:
        self._file = file
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


class _DayFileWriter:
    """One day's file being written under its partial name (blocking calls: run in a
    thread). `finish` makes it the day's file; until then nothing looks complete."""

    def __init__(self, directory: Path, day: date) -> None:
        self.path = directory / day_file_name(day)
        self.partial = directory / partial_file_name(self.path.name, os.getpid())
        self._file = _open_private(self.partial)
        self._hashing = _HashingWriter(self._file)
        # No name and mtime 0 in the gzip header: the same tickets give the same bytes.
        # Level 6, zlib's usual: 9 costs several times the CPU for a few per cent.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._hashing, mtime=0, compresslevel=6)

    def write(self, lines: Sequence[bytes]) -> None:
        self._gzip.write(b"".join(lines))

    def close(self) -> tuple[int, str]:
        """Close and fsync, still under the partial name; return the size and SHA-256."""
        self._gzip.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hashing.size, self._hashing.digest.hexdigest()

    def put_in_place(self) -> None:
        """Rename to the day's file, durably (after the manifest lists its digest)."""
        os.replace(self.partial, self.path)
        _fsync_directory(self.path.parent)

    def abandon(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()


def _open_lock_file(path: Path) -> IO[bytes]:
    """The lock file, private to its owner like everything archive writes."""
    return os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE), "r+b")


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """The directory's archive lock, or ArchiveError when another archive holds it."""
    with _open_lock_file(directory / LOCK_FILE_NAME) as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveError(f"{directory}: another archive is writing there now; try again later") from None
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _settle_partial_files(directory: Path, manifest: dict[str, Any] | None) -> None:
    """Finish or remove what writers that died left (called holding the directory's
    lock, so no live writer has a partial file there). A partial day file the manifest
    already lists with its digest was stopped between the manifest and its rename: it
    is put in place. Any other is removed."""
    for entry in directory.iterdir():
        if not is_partial_file_name(entry.name):
            continue
        final = directory / final_file_name(entry.name)
        expected = None if manifest is None else listed_sha256(manifest, final.name)
        if expected is not None and is_day_file_name(final.name) and _file_sha256(entry) == expected:
            log.warning("putting %s in place as %s: the manifest lists it, its archive stopped before the rename",
                        entry, final)
            os.replace(entry, final)
            _fsync_directory(directory)
        else:
            log.warning("removing %s, left by an archive that did not finish", entry)
            entry.unlink()


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST_NAME
    try:
        return parse_manifest(path.read_bytes())
    except FileNotFoundError:
        return None
    except ArchiveFormatError as exc:
        raise ArchiveError(f"{path}: {exc}") from None


def _make_directory(directory: Path) -> None:
    """The archive directory, made when missing; ArchiveError when the path is taken by
    something else (mkdir's own error would be "File exists")."""
    if directory.is_file():
        raise ArchiveError(f"{directory}: is a file, not a directory")
    if directory.exists() and not directory.is_dir():
        raise ArchiveError(f"{directory}: is not a directory")
    missing = [path for path in (directory, *directory.parents) if not path.exists()]
    # Outermost first, each private whatever the umask: a directory archive makes is
    # never open to other users, parents included (one could swap the leaf otherwise).
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            continue  # made by someone else meanwhile: its mode is theirs
        os.chmod(path, DIRECTORY_MODE)


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
    await asyncio.to_thread(_make_directory, directory)
    days = days_before(await repository.day_partitions(), before)
    archived = []
    with _directory_lock(directory):
        # The manifest first: one archive cannot merge into must not get a day file.
        manifest = await asyncio.to_thread(_read_manifest, directory)
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


@dataclass(frozen=True)
class _KeptLine:
    """A ticket of a day's existing file, kept as its line unless the database has it."""

    key: tuple[str, datetime]
    status: str
    line: bytes


class _LineReader:
    """A day file's lines, each at most `max_line_bytes` with its newline (blocking
    calls: run in a thread): a line is decoded whole, so one huge line must not take
    the memory it claims."""

    def __init__(self, path: Path, max_line_bytes: int) -> None:
        self.path = path
        self.line_number = 0
        self._max_line_bytes = max_line_bytes
        self._gzip = gzip.open(path, "rb")

    def readline(self) -> bytes:
        """The next line, b"" at the end; ArchiveError for a line over the cap or a
        file that is not whole gzip."""
        try:
            line = self._gzip.readline(self._max_line_bytes + 1)
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{self.path}: not a whole gzip file: {exc}") from None
        if line:
            self.line_number += 1
        if len(line) > self._max_line_bytes:
            raise ArchiveError(f"{self.path}, line {self.line_number}: longer than {self._max_line_bytes} bytes, "
                               "the most a line may take")
        return line

    def close(self) -> None:
        self._gzip.close()


class _ExistingDayFile:
    """The tickets of a day's complete file, in key order, read in bounded batches to
    be merged with the database's (blocking calls: run in a thread)."""

    def __init__(self, path: Path, max_line_bytes: int) -> None:
        self._lines = _LineReader(path, max_line_bytes)
        self._last_key: tuple[str, datetime] | None = None

    def batch(self, max_tickets: int, max_bytes: int) -> list[_KeptLine]:
        kept: list[_KeptLine] = []
        size = 0
        while len(kept) < max_tickets and size < max_bytes:
            line = self._lines.readline()
            if not line:
                break
            try:
                ticket = decode_ticket(line)
                canonical = str(uuid.UUID(ticket.id)) == ticket.id
            except (ArchiveFormatError, ValueError) as exc:
                raise DayRefused(f"{self._lines.path}, line {self._lines.line_number}: {exc}") from None
            key = (ticket.id, ticket.received_at)
            # The merge relies on the file's order being the database's: string order of
            # canonical (lowercase) UUIDs is the uuid type's order.
            if not canonical or (self._last_key is not None and key <= self._last_key):
                raise DayRefused(f"{self._lines.path}, line {self._lines.line_number}: not in id order; "
                                 "archive cannot merge into it")
            self._last_key = key
            kept.append(_KeptLine(key=key, status=ticket.status, line=line))
            size += len(line)
        return kept

    def close(self) -> None:
        self._lines.close()


def _complete_day_file(directory: Path, manifest: dict[str, Any] | None, day: date) -> Path | None:
    """The day's file when the manifest lists it (its tickets must be kept: the day may
    have been purged since); None when not listed. DayRefused when it is listed but
    missing, unreadable or changed: archive never overwrites a damaged archive."""
    path = directory / day_file_name(day)
    expected = None if manifest is None else listed_sha256(manifest, path.name)
    if expected is None:
        if path.exists():
            # Its manifest was lost or edited: the file may hold tickets the database no
            # longer has, and nothing says whether it is whole. Never replaced unread.
            raise DayRefused(f"{path} exists but {MANIFEST_NAME} does not list it (a lost or edited manifest?); "
                             "move it away, or restore it, before archiving this day here")
        return None
    try:
        actual = _file_sha256(path)
    except OSError as exc:
        raise DayRefused(f"{path}: listed in {MANIFEST_NAME} but cannot be read ({exc.strerror}); "
                         "put it back or archive to another directory") from None
    if actual != expected:
        raise DayRefused(f"{path}: its SHA-256 is not the one {MANIFEST_NAME} lists; "
                         "archive will not replace a damaged archive file") from None
    return path


async def _archive_day(
    repository: Repository, day: date, directory: Path, manifest: dict[str, Any] | None, page_tickets: int,
    page_bytes: int,
) -> tuple[ArchivedDay, dict[str, Any]]:
    existing = await asyncio.to_thread(_complete_day_file, directory, manifest, day)
    old = None if existing is None else await asyncio.to_thread(_ExistingDayFile, existing, MAX_LINE_BYTES)
    try:
        writer = await asyncio.to_thread(_DayFileWriter, directory, day)
        merge = _DayMerge(writer, old, page_tickets, page_bytes)
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
            await asyncio.to_thread(_write_atomically, directory / MANIFEST_NAME, encode_manifest(manifest))
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


class _DayMerge:
    """Writes a day's tickets from the database, merged (by key) with those of the
    day's previous complete file when there is one: a ticket in both is written as the
    database has it (its outcome may have changed), one only in the file as its line
    was. Both sides come in key order and a page or batch at a time, so the day is
    never held whole."""

    def __init__(self, writer: _DayFileWriter, old: _ExistingDayFile | None, batch_tickets: int,
                 batch_bytes: int) -> None:
        self._writer = writer
        self._old = old
        self._batch_tickets = batch_tickets
        self._batch_bytes = batch_bytes
        self._buffered: collections.deque[_KeptLine] = collections.deque()
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.database_statuses: collections.Counter[str] = collections.Counter()
        self.kept = 0  # tickets only the previous file held

    async def _next_kept(self) -> _KeptLine | None:
        if not self._buffered and self._old is not None:
            batch = await asyncio.to_thread(self._old.batch, self._batch_tickets, self._batch_bytes)
            if batch:
                self._buffered.extend(batch)
            else:
                self._old = None
        return self._buffered[0] if self._buffered else None

    async def _emit(self, line: bytes, status: str) -> None:
        self._out.append(line)
        self._out_bytes += len(line)
        self.statuses[status] += 1
        if len(self._out) >= self._batch_tickets or self._out_bytes >= self._batch_bytes:
            await self._flush()

    async def _flush(self) -> None:
        if self._out:
            await asyncio.to_thread(self._writer.write, self._out)
            self._out, self._out_bytes = [], 0

    async def _keep_before(self, key: tuple[str, datetime] | None) -> None:
        """Write the previous file's tickets before `key` (all that are left: None)."""
        while (head := await self._next_kept()) is not None and (key is None or head.key < key):
            self._buffered.popleft()
            self.kept += 1
            await self._emit(head.line, head.status)
        if head is not None and head.key == key:
            self._buffered.popleft()  # the database's version replaces it

    async def add_page(self, page: Sequence[ArchivedTicket]) -> None:
        for ticket in page:
            await self._keep_before((ticket.id, ticket.received_at))
            self.database_statuses[ticket.status] += 1
            await self._emit(encode_ticket(ticket), ticket.status)
        await self._flush()

    async def finish(self) -> None:
        await self._keep_before(None)
        await self._flush()


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
        actual = _file_sha256(path)
        manifest = _read_manifest(directory)
    except FileNotFoundError as exc:
        return f"archive missing: {exc.filename} is gone"
    except ArchiveError as exc:
        return f"archive unreadable: {exc}"
    except OSError as exc:
        return f"archive unreadable: {exc.filename}: {exc.strerror}"
    if manifest is None:
        return f"archive missing: {directory / MANIFEST_NAME} is gone, so nothing says {path} is complete"
    if listed_sha256(manifest, note.file_name) != note.sha256:
        return f"archive changed: {directory / MANIFEST_NAME} no longer lists {path} with the SHA-256 archived"
    if actual != note.sha256:
        return f"archive changed: the SHA-256 of {path} is not the one archived"
    return None


def _conflict(exc: DatabaseConflict, lock_timeout_seconds: float) -> str:
    """What kept a purge from its day, in a few words."""
    if "55P03" in str(exc):  # lock_not_available: the lock_timeout ran out
        return f"its tables stayed locked by other sessions for {lock_timeout_seconds:g} s"
    return " ".join(str(exc).split())


def _archive_files(paths: Sequence[Path]) -> list[Path]:
    """The day files named, or found in the directories named, in order."""
    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(entry for entry in path.iterdir() if is_day_file_name(entry.name))
            if not found:
                raise ArchiveError(f"{path}: no archive file (tickets-YYYY-MM-DD.jsonl.gz) in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise ArchiveError(f"{path}: not a regular file or a directory, so not an archive file")
        else:
            raise ArchiveError(f"{path}: no such file or directory")
    return files


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(files: Sequence[Path]) -> None:
    """Refuse, naming it, a file its directory's manifest does not list with its digest:
    an archive that did not finish, or a file changed since."""
    manifests: dict[Path, dict[str, Any]] = {}
    for file in files:
        directory = file.parent
        if directory not in manifests:
            manifest = _read_manifest(directory)
            if manifest is None:
                raise ArchiveError(f"{file}: no {MANIFEST_NAME} beside it, so nothing says it is complete")
            manifests[directory] = manifest
        expected = listed_sha256(manifests[directory], file.name)
        if expected is None:
            raise ArchiveError(f"{file}: not listed in {directory / MANIFEST_NAME}: not a complete archive file")
        if _file_sha256(file) != expected:
            raise ArchiveError(f"{file}: its SHA-256 is not the one {directory / MANIFEST_NAME} lists: "
                               "changed or damaged since it was archived")


class _ArchiveReader:
    """A day file read in bounded batches of tickets, each line at most
    `max_line_bytes` (blocking calls: run in a thread)."""

    def __init__(self, path: Path, max_line_bytes: int, max_body_bytes: int | None = None) -> None:
        self.path = path
        self._lines = _LineReader(path, max_line_bytes)
        self._day = day_of_file_name(path.name)
        self._max_body_bytes = max_body_bytes

    def batch(self, max_tickets: int, max_bytes: int) -> list[ArchivedTicket]:
        tickets: list[ArchivedTicket] = []
        size = 0
        while len(tickets) < max_tickets and (not tickets or size < max_bytes):
            line = self._lines.readline()
            if not line:
                break
            where = f"{self.path}, line {self._lines.line_number}"
            try:
                ticket = decode_ticket(line)
            except ArchiveFormatError as exc:
                raise ArchiveError(f"{where}: {exc}") from None
            if self._day is not None and utc_day(ticket.received_at) != self._day:
                raise ArchiveError(f"{where}: received_at {ticket.received_at.isoformat()} is not in the file's day")
            if self._max_body_bytes is not None and len(ticket.body) > self._max_body_bytes:
                # The service never took a body this large under this setting; loading it
                # would cost many times its size in memory.
                raise ArchiveError(f"{where}: a body of {len(ticket.body)} bytes, over MYTICKET_MAX_BODY_BYTES "
                                   f"({self._max_body_bytes}); raise it to restore this file")
            tickets.append(ticket)
            size += len(ticket.body)
        return tickets

    def close(self) -> None:
        self._lines.close()


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
    files = await asyncio.to_thread(_archive_files, paths)
    await asyncio.to_thread(_verify, files)
    read = stored = 0
    for path in files:
        reader = await asyncio.to_thread(_ArchiveReader, path, max_line_bytes, max_body_bytes)
        file_read = file_stored = 0
        try:
            while batch := await asyncio.to_thread(reader.batch, batch_tickets, batch_bytes):
                file_read += len(batch)
                file_stored += await repository.restore_tickets(tickets=batch)
        finally:
            await asyncio.to_thread(reader.close)
        log.info("restored %s: %d tickets read, %d stored, %d already present",
                 path, file_read, file_stored, file_read - file_stored)
        read += file_read
        stored += file_stored
    return RestoreReport(files=len(files), tickets_read=read, stored=stored, already_present=read - stored)
