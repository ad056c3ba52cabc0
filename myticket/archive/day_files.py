"""Day files, gzip of JSON lines (blocking calls: run them in a thread): the writer of
a day's new file under its partial name, the readers of a day's existing file (to
merge into) and of a file to restore, each line read with a byte cap, and the day
files a restore is given."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import IO

from .errors import ArchiveError, DayRefused
from .files import fsync_directory, open_private
from .format import (
    ArchiveFormatError,
    day_file_name,
    day_of_file_name,
    decode_ticket,
    is_day_file_name,
    partial_file_name,
)
from ..core.domain import ArchivedTicket
from ..core.ids import utc_day

# The longest line of a day file read back (restore, or the merge of a day archived
# again): a line is decoded whole, so this bounds the memory one ticket takes.
MAX_LINE_BYTES = 64 * 1024 * 1024


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


class DayFileWriter:
    """One day's file being written under its partial name (blocking calls: run in a
    thread). `put_in_place` makes it the day's file; until then nothing looks complete."""

    def __init__(self, directory: Path, day: date) -> None:
        self.path = directory / day_file_name(day)
        self.partial = directory / partial_file_name(self.path.name, os.getpid())
        self._file = open_private(self.partial)
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
        fsync_directory(self.path.parent)

    def abandon(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()


@dataclass(frozen=True)
class KeptLine:
    """A ticket of a day's existing file, kept as its line unless the database has it."""

    key: tuple[str, datetime]
    status: str
    line: bytes


class LineReader:
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


class ExistingDayFile:
    """The tickets of a day's complete file, in key order, read in bounded batches to
    be merged with the database's (blocking calls: run in a thread)."""

    def __init__(self, path: Path, max_line_bytes: int) -> None:
        self._lines = LineReader(path, max_line_bytes)
        self._last_key: tuple[str, datetime] | None = None

    def batch(self, max_tickets: int, max_bytes: int) -> list[KeptLine]:
        kept: list[KeptLine] = []
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
            kept.append(KeptLine(key=key, status=ticket.status, line=line))
            size += len(line)
        return kept

    def close(self) -> None:
        self._lines.close()


class ArchiveReader:
    """A day file read in bounded batches of tickets, each line at most
    `max_line_bytes` (blocking calls: run in a thread)."""

    def __init__(self, path: Path, max_line_bytes: int, max_body_bytes: int | None = None) -> None:
        self.path = path
        self._lines = LineReader(path, max_line_bytes)
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


def day_files_named(paths: Sequence[Path]) -> list[Path]:
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
