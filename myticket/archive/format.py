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

from ..core.domain import ArchivedTicket
from ..core.ids import received_at_of
from ..core.parser import MAX_PRODUCT_ID_CHARACTERS, MAX_PRODUCT_NAME_CHARACTERS, TicketLine

FORMAT = "myticket-archive/1"
MANIFEST_NAME = "manifest.json"
STATUSES = ("pending", "processed", "rejected", "duplicate")
# What the database and the service take (numeric(12,2); the parser's and the ingest's
# limits): a restored line beyond them would fail its whole batch, or the next archive.
MONEY_LIMIT = Decimal(10) ** 10
MAX_CONTENT_TYPE_CHARS = 255  # as POST /ticket takes it
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


def day_of_file_name(name: str) -> date | None:
    """The day a day file's name gives (None for another name, or an impossible date)."""
    match = _DAY_FILE.match(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match["day"])
    except ValueError:
        return None


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
    """A finite amount that numeric(12,2) holds, or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArchiveFormatError(f"{field}: money must be a decimal string, got {value!r}")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise ArchiveFormatError(f"{field}: not a decimal: {value!r}") from None
    if not amount.is_finite() or abs(amount) >= MONEY_LIMIT:
        raise ArchiveFormatError(f"{field}: not an amount the database holds: {value!r}")
    return amount


def _text(value: Any, field: str, *, optional: bool = True, most: int | None = None) -> str | None:
    """Text as PostgreSQL stores it (no NUL), or None where the field may be null:
    anything else would fail the whole restore batch in the database, or later the
    archive that reads it back."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ArchiveFormatError(f"{field}: must be text{' or null' if optional else ''}, got {value!r:.60}")
    if "\x00" in value:
        raise ArchiveFormatError(f"{field}: holds a NUL character, which PostgreSQL text cannot")
    if most is not None and len(value) > most:
        raise ArchiveFormatError(f"{field}: longer than {most} characters")
    return value


def _headers(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ArchiveFormatError(f"headers: must be an object of texts or null, got {value!r:.60}")
    return {_text(name, "headers", optional=False): _text(text, "headers", optional=False)
            for name, text in value.items()}


def _warnings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ArchiveFormatError(f"warnings: must be a list of texts, got {value!r:.60}")
    return tuple(_text(item, "warnings", optional=False) for item in value)


def _whole_number(value: Any, field: str, *, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value < 2**31:
        raise ArchiveFormatError(f"{field}: must be a whole number from {least}, got {value!r:.60}")
    return value


def _line(item: Any) -> TicketLine:
    if not isinstance(item, dict):
        raise ArchiveFormatError(f"lines: each must be an object, got {item!r:.60}")
    price = _parsed_money(item["price"], "price")
    if price is None:
        raise ArchiveFormatError("price: a line has no price")
    return TicketLine(
        line_number=_whole_number(item["line_number"], "line_number", least=1),
        product_id=_text(item["product_id"], "product_id", optional=False, most=MAX_PRODUCT_ID_CHARACTERS),
        name=_text(item["name"], "name", optional=False, most=MAX_PRODUCT_NAME_CHARACTERS),
        price=price,
    )


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
        if not isinstance(record["lines"], list):
            raise ArchiveFormatError("lines: must be a list")
        lines = tuple(_line(item) for item in record["lines"])
        if len({line.line_number for line in lines}) != len(lines):
            raise ArchiveFormatError("lines: two lines have the same line_number")
        return ArchivedTicket(
            id=str(ticket_id),
            received_at=received_at,
            content_type=_text(record["content_type"], "content_type", most=MAX_CONTENT_TYPE_CHARS),
            body=body,
            status=record["status"],
            processed_at=(None if record["processed_at"] is None
                          else _parsed_instant(record["processed_at"], "processed_at")),
            attempts=_whole_number(record["attempts"], "attempts", least=0),
            order_ref=_text(record["order_ref"], "order_ref"),
            vat=_parsed_money(record["vat"], "vat"),
            total=_parsed_money(record["total"], "total"),
            headers=_headers(record["headers"]),
            warnings=_warnings(record["warnings"]),
            error=_text(record["error"], "error"),
            text_encoding=_text(record["text_encoding"], "text_encoding"),
            body_sha256=digest,
            duplicate_of=None if record["duplicate_of"] is None else str(_parsed_id(record["duplicate_of"])),
            lines=lines,
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
