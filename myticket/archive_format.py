"""The archive's format, without I/O: one JSON object per ticket, the manifest, the
file names, and which days an archive or a purge takes.

A day's file is `tickets-YYYY-MM-DD.jsonl.gz`: gzip (no name, mtime 0, so the same
tickets give the same bytes) of JSON Lines, one object per ticket. Bodies are base64
of the exact bytes received, money is a decimal string (never a float), times are ISO
8601 in UTC to the microsecond. `manifest.json` beside the files lists each day with
its counts and the SHA-256 of its file: a file is complete only when the manifest
lists it with that digest.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from .domain import ArchivedTicket
from .ids import received_at_of
from .parser import TicketLine

FORMAT = "myticket-archive/1"
MANIFEST_NAME = "manifest.json"
STATUSES = ("pending", "processed", "rejected", "duplicate")
# Reception times a restored ticket may carry: a ticket from year 1 would make a day
# partition that date arithmetic around it cannot reach (and stop archive and retention).
EARLIEST_RECEPTION = datetime(2000, 1, 1, tzinfo=timezone.utc)
LATEST_RECEPTION = datetime(2200, 1, 1, tzinfo=timezone.utc)
# Files being written: hidden, and never matching `tickets-*.jsonl.gz`, so that nothing
# takes one for a day's file.
PARTIAL_MARK = ".partial-"
_DAY_FILE = re.compile(r"^tickets-(?P<day>\d{4}-\d{2}-\d{2})\.jsonl\.gz$")


class ArchiveFormatError(ValueError):
    """A file or manifest that is not what `myticket archive` writes."""


def max_line_bytes_for(max_body_bytes: int) -> int:
    """The longest day-file line restore accepts when bodies of up to `max_body_bytes`
    are accepted: the body in base64 (4/3), rounded up to twice, plus 16 MiB for the
    rest of its line (outcome, lines); never under 64 MiB."""
    return max(64 * 1024 * 1024, 2 * max_body_bytes + 16 * 1024 * 1024)


def day_file_name(day: date) -> str:
    return f"tickets-{day.isoformat()}.jsonl.gz"


def partial_file_name(final_name: str, pid: int) -> str:
    """Where `final_name` is written before it is complete (by process `pid`)."""
    return f".{final_name}{PARTIAL_MARK}{pid}"


def final_file_name(partial_name: str) -> str:
    """The name a partial file (`partial_file_name`) takes once complete."""
    return partial_name[1:partial_name.index(PARTIAL_MARK)]


def is_partial_file_name(name: str) -> bool:
    return name.startswith(".") and PARTIAL_MARK in name


def is_day_file_name(name: str) -> bool:
    return _DAY_FILE.match(name) is not None


def days_before(days: Iterable[date], before: date) -> list[date]:
    """The days strictly before `before`, oldest first: what `--before` takes."""
    return sorted(day for day in set(days) if day < before)


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def encode_ticket(ticket: ArchivedTicket) -> bytes:
    """One ticket as one line of JSON (with its newline), keys in a fixed order."""
    record = {
        "id": ticket.id,
        "received_at": _instant(ticket.received_at),
        "content_type": ticket.content_type,
        "body_base64": base64.b64encode(ticket.body).decode("ascii"),
        "status": ticket.status,
        "processed_at": _instant(ticket.processed_at),
        "attempts": ticket.attempts,
        "order_ref": ticket.order_ref,
        "vat": _money(ticket.vat),
        "total": _money(ticket.total),
        "headers": None if ticket.headers is None else dict(sorted(ticket.headers.items())),
        "warnings": list(ticket.warnings),
        "error": ticket.error,
        "text_encoding": ticket.text_encoding,
        "body_sha256": None if ticket.body_sha256 is None else ticket.body_sha256.hex(),
        "duplicate_of": ticket.duplicate_of,
        "lines": [
            {"line_number": line.line_number, "product_id": line.product_id, "name": line.name,
             "price": str(line.price)}
            for line in ticket.lines
        ],
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def _parsed_instant(value: Any, field: str) -> datetime:
    try:
        instant = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise ArchiveFormatError(f"{field}: not an ISO 8601 time: {value!r}") from None
    if instant.tzinfo is None:
        raise ArchiveFormatError(f"{field}: no time zone: {value!r}")
    return instant


def _parsed_id(value: Any) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise ArchiveFormatError(f"id: not a UUID: {value!r}") from None


def _parsed_money(value: Any, field: str) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArchiveFormatError(f"{field}: money must be a decimal string, got {value!r}")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ArchiveFormatError(f"{field}: not a decimal: {value!r}") from None


def decode_ticket(line: bytes) -> ArchivedTicket:
    """One line of a day's file as its ticket; ArchiveFormatError names what is wrong."""
    try:
        record = json.loads(line)
        if not isinstance(record, dict):
            raise ArchiveFormatError("a line is not a JSON object")
        if record["status"] not in STATUSES:
            raise ArchiveFormatError(f"unknown status {record['status']!r}")
        digest = None if record["body_sha256"] is None else bytes.fromhex(record["body_sha256"])
        body = base64.b64decode(record["body_base64"], validate=True)
        if digest is not None and digest != hashlib.sha256(body).digest():
            # A digest that is not the body's would make another ticket's bytes look
            # processed before: its later deliveries would be duplicates of this one.
            raise ArchiveFormatError("body_sha256 is not the SHA-256 of the body")
        ticket_id = _parsed_id(record["id"])
        received_at = _parsed_instant(record["received_at"], "received_at")
        if not EARLIEST_RECEPTION <= received_at < LATEST_RECEPTION:
            raise ArchiveFormatError(
                f"received_at: {record['received_at']!r} is not between {EARLIEST_RECEPTION.date()} "
                f"and {LATEST_RECEPTION.date()}"
            )
        carried = received_at_of(ticket_id)
        if carried is not None and carried != received_at:
            # The id names the day the service reads it from: a mismatch could never be read.
            raise ArchiveFormatError(f"received_at: {record['received_at']!r} is not the time its UUIDv7 id carries")
        return ArchivedTicket(
            id=str(ticket_id),
            received_at=received_at,
            content_type=record["content_type"],
            body=body,
            status=record["status"],
            processed_at=(None if record["processed_at"] is None
                          else _parsed_instant(record["processed_at"], "processed_at")),
            attempts=int(record["attempts"]),
            order_ref=record["order_ref"],
            vat=_parsed_money(record["vat"], "vat"),
            total=_parsed_money(record["total"], "total"),
            headers=record["headers"],
            warnings=tuple(record["warnings"]),
            error=record["error"],
            text_encoding=record["text_encoding"],
            body_sha256=digest,
            duplicate_of=record["duplicate_of"],
            lines=tuple(
                TicketLine(line_number=int(item["line_number"]), product_id=item["product_id"], name=item["name"],
                           price=_parsed_money(item["price"], "price"))
                for item in record["lines"]
            ),
        )
    except ArchiveFormatError:
        raise
    except KeyError as exc:
        raise ArchiveFormatError(f"a line lacks the field {exc.args[0]!r}") from None
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ArchiveFormatError(f"a line is not an archived ticket: {exc}") from None


@dataclass(frozen=True)
class DayEntry:
    """What the manifest says of one day's file."""

    file: str
    tickets: int
    statuses: dict[str, int]
    bytes: int
    sha256: str
    archived_at: str

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "tickets": self.tickets, "statuses": dict(sorted(self.statuses.items())),
                "bytes": self.bytes, "sha256": self.sha256, "archived_at": self.archived_at}


def empty_manifest() -> dict[str, Any]:
    return {"format": FORMAT, "days": {}}


def parse_manifest(text: str | bytes) -> dict[str, Any]:
    """A manifest read back; ArchiveFormatError for anything archive does not write."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ArchiveFormatError(f"{MANIFEST_NAME} is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArchiveFormatError(f"{MANIFEST_NAME} is not of format {FORMAT}")
    if not isinstance(manifest.get("days"), dict):
        raise ArchiveFormatError(f"{MANIFEST_NAME} has no days")
    return manifest


def merged_manifest(manifest: Mapping[str, Any] | None, day: date, entry: DayEntry) -> dict[str, Any]:
    """The manifest with the day's entry set (replaced when archived again); the other
    days as they were, every day in date order."""
    days = dict((manifest or empty_manifest())["days"])
    days[day.isoformat()] = entry.as_json()
    return {**(manifest or {}), "format": FORMAT, "days": dict(sorted(days.items()))}


def encode_manifest(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"


def listed_sha256(manifest: Mapping[str, Any], file_name: str) -> str | None:
    """The SHA-256 the manifest gives for `file_name`, None when it does not list it."""
    for entry in manifest["days"].values():
        if isinstance(entry, dict) and entry.get("file") == file_name:
            return entry.get("sha256")
    return None
