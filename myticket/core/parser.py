"""The ticket parser: bytes in, a ParsedTicket or a TicketParseError out. No I/O.

The format (see bench/ticket.txt): `Key: Value` header lines (Order, VAT, Total), one
or more blank lines, then CSV with a header row naming the columns product,
product_id and price, delimited by `,`, `;` or a tab (whichever yields those columns in
the header row). Data quality is not guaranteed, so the parser tolerates what it can
read without guessing (line endings, BOM, whitespace, column order, extra columns,
decimal commas, cp1252, UTF-16 with a byte-order mark) and rejects what it cannot,
saying on which line and why: a row is never truncated to fit its header. Money is
Decimal, never float.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# numeric(12,2): ten digits before the point.
MAX_AMOUNT = Decimal("9999999999.99")
# Documented limits, far below PostgreSQL's own (an index entry must fit in about 2.7 kB;
# product_id is indexed twice): a ticket past one is rejected naming the line, instead
# of reaching the database. A receipt line is short; a cash register sends no more than
# a few hundred lines; the body limit (1 MiB) allows some tens of thousands.
MAX_PRODUCT_ID_CHARACTERS = 100
MAX_PRODUCT_NAME_CHARACTERS = 500
MAX_PRODUCT_LINES = 50_000
MAX_HEADER_LINES = 100
# Warnings kept per ticket: a body of 200,000 repeated header lines must not store (and
# answer on every read) 200,000 warnings. The rest are counted in one last warning.
MAX_WARNINGS = 50
REQUIRED_COLUMNS = ("product", "product_id", "price")
# Tried in this order on the CSV header row; the one that yields the required columns is
# used for that ticket's rows (French exports use `;`, with decimal commas).
DELIMITERS = (",", ";", "\t")
KNOWN_HEADERS = {"order": "Order", "vat": "VAT", "total": "Total"}

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BYTE_LINE_BREAK = re.compile(rb"\r\n|\r|\n")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_AMOUNT = re.compile(r"^\+?(?P<units>\d+)(?:[.,](?P<cents>\d+))?$")


# The most characters of the ticket's own text a rejection quotes: a message must say
# where the problem is, not copy a line of a megabyte into the database and the log.
MAX_QUOTED_CHARACTERS = 60


def quoted(text: str) -> str:
    """`text` in double quotes, cut to MAX_QUOTED_CHARACTERS with an ellipsis."""
    if len(text) <= MAX_QUOTED_CHARACTERS:
        return f'"{text}"'
    return f'"{text[:MAX_QUOTED_CHARACTERS]}…" ({len(text)} characters)'


class TicketParseError(ValueError):
    """The body is not a ticket we can read; the message says where and why."""


@dataclass(frozen=True, slots=True)
class TicketLine:
    line_number: int
    product_id: str
    name: str
    price: Decimal


@dataclass(frozen=True, slots=True)
class ParsedTicket:
    order_ref: str | None
    vat: Decimal | None
    total: Decimal | None
    # Every header, unknown keys included: the first spelling of each key with its last
    # value, the one order_ref, vat and total were read from.
    headers: dict[str, str]
    lines: tuple[TicketLine, ...]
    warnings: tuple[str, ...]
    encoding: str


# Amounts already read, by their exact text: prices repeat from ticket to ticket, and
# reading one (a pattern, a Decimal, a rounding) was a tenth of a ticket's parse. Only
# amounts that were accepted are kept, at most MAX_KNOWN_AMOUNTS (then forgotten at once).
MAX_KNOWN_AMOUNTS = 10_000
_known_amounts: dict[str, Decimal] = {}


def parse_amount(raw: str, *, what: str) -> Decimal:
    """A non-negative amount with at most two decimals: `2`, `14.90`, ` 4 `, `14,90`."""
    known = _known_amounts.get(raw)
    if known is not None:
        return known
    amount = _read_amount(raw, what)
    if len(_known_amounts) >= MAX_KNOWN_AMOUNTS:
        _known_amounts.clear()
    _known_amounts[raw] = amount
    return amount


def _read_amount(raw: str, what: str) -> Decimal:
    text = raw.strip()
    if not text:
        raise TicketParseError(f"{what} is empty")
    match = _AMOUNT.match(text)
    if match is None:
        if text.startswith("-"):
            raise TicketParseError(f"{what} {quoted(text)} is negative")
        raise TicketParseError(f"{what} {quoted(text)} is not a number")
    cents = match["cents"] or ""
    if len(cents) > 2:
        raise TicketParseError(f"{what} {quoted(text)} has more than 2 decimals")
    try:
        amount = Decimal(f"{match['units']}.{cents or '0'}")
    except InvalidOperation:  # pragma: no cover - the pattern only lets digits through
        raise TicketParseError(f"{what} {quoted(text)} is not a number") from None
    if amount > MAX_AMOUNT:
        raise TicketParseError(f"{what} {quoted(text)} is too large")
    return amount.quantize(Decimal("0.01"))


def _decode(body: bytes) -> tuple[str, str]:
    """The body's text and encoding: UTF-8 (BOM or not), UTF-16 when a byte-order mark
    says so (Windows tools write it; its NUL bytes would otherwise reject it), else cp1252."""
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    elif body.startswith(_UTF16_BOMS):
        return _decode_utf16(body)
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return body.decode("cp1252"), "cp1252"
    except UnicodeDecodeError as exc:
        line_number = len(_BYTE_LINE_BREAK.findall(body, 0, exc.start)) + 1
        raise TicketParseError(
            f"line {line_number}: body is neither UTF-8 nor cp1252 text"
            f" (byte 0x{body[exc.start]:02x} at offset {exc.start})"
        ) from None


def _decode_utf16(body: bytes) -> tuple[str, str]:
    """Decode after the mark; a body with the mark that is not UTF-16 is not guessed at."""
    encoding = "utf-16-le" if body.startswith(b"\xff\xfe") else "utf-16-be"
    try:
        return body[2:].decode(encoding), encoding
    except UnicodeDecodeError as exc:
        line_number = len(_LINE_BREAK.findall(body[2 : 2 + exc.start].decode(encoding))) + 1
        raise TicketParseError(
            f"line {line_number}: body starts with a UTF-16 byte-order mark but is not UTF-16 text"
            f" ({exc.reason} at offset {exc.start + 2})"
        ) from None


def _csv_fields(line: str, line_number: int, delimiter: str = ",") -> list[str]:
    if '"' not in line:
        # Without quotes CSV is a plain split (csv.reader costs ten times more).
        return [field.lstrip() for field in line.split(delimiter)]
    try:
        return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True, strict=True))
    except csv.Error as exc:
        raise TicketParseError(f"line {line_number}: malformed CSV ({exc})") from None
    except StopIteration:
        return []


def _column_positions(names: list[str]) -> dict[str, int] | None:
    """Positions of the required columns when the header row's lowercased `names` hold
    them all, else None."""
    find = names.index
    product, product_id, price = REQUIRED_COLUMNS
    try:
        return {product: find(product), product_id: find(product_id), price: find(price)}
    except ValueError:
        return None


def _strip_row(line: str, delimiter: str) -> str:
    """The row without surrounding whitespace ("" for a blank line), keeping a tab that
    delimits an empty first or last field."""
    stripped = line.strip()
    if delimiter != "\t" or not stripped:
        return stripped
    return line.strip(" ")


def _read_csv_header(raw_line: str, line_number: int) -> tuple[str, list[str], dict[str, int] | None]:
    """Split a CSV header row by each delimiter in DELIMITERS; return the delimiter, the
    lowercased column names and the required columns' positions. When no delimiter yields
    the required columns the positions are None and the names are the closest attempt, for
    the error message; when two do, the ticket is rejected rather than guessed."""
    chosen: tuple[str, list[str], dict[str, int]] | None = None
    closest: tuple[str, list[str], None] | None = None
    malformed: TicketParseError | None = None
    for delimiter in DELIMITERS:
        if delimiter != "," and delimiter not in raw_line:
            continue
        try:
            fields = _csv_fields(_strip_row(raw_line, delimiter), line_number, delimiter)
        except TicketParseError as exc:
            malformed = malformed or exc
            continue
        names = [field.strip().lower() for field in fields]
        columns = _column_positions(names)
        if columns is None:
            if closest is None or _required_count(names) > _required_count(closest[1]):
                closest = (delimiter, names, None)
        elif chosen is None:
            chosen = (delimiter, names, columns)
        else:
            raise TicketParseError(
                f"line {line_number}: CSV header has the required columns with both {chosen[0]!r} and"
                f" {delimiter!r} as delimiter"
            )
    if chosen is not None:
        return chosen
    if closest is None:
        assert malformed is not None  # the comma is always tried
        raise malformed
    return closest


def _required_count(names: list[str]) -> int:
    return sum(name in REQUIRED_COLUMNS for name in names)


def _unnamed_columns(names: list[str], line_number: int) -> tuple[int, ...]:
    """Reject a header naming a required column twice (which one holds the value?); return
    the positions of unnamed columns, whose values would otherwise vanish unseen."""
    for column in REQUIRED_COLUMNS:
        if names.count(column) > 1:
            raise TicketParseError(f"line {line_number}: CSV header has {names.count(column)} {column} columns")
    if "" not in names:
        return ()
    return tuple(position for position, name in enumerate(names) if not name)


def _is_split_decimal(units: str, cents: str, row: str) -> bool:
    """True when the row ends with `digits,1-2 digits`, unquoted and unspaced: a price
    written with a decimal comma that the comma delimiter cut in two (with any other
    delimiter the row cannot end so)."""
    return (
        units.isascii() and units.isdigit()
        and 1 <= len(cents) <= 2 and cents.isascii() and cents.isdigit()
        and row.endswith(f"{units},{cents}")
    )


def _fit_row(fields: list[str], width: int, row: str, line_number: int, price_is_last: bool,
             warnings: list[str]) -> list[str]:
    """A row whose field count differs from the header's is never truncated nor padded:
    the one case with a certain meaning (a split decimal-comma price) is mended with a
    warning, anything else rejects the ticket."""
    if len(fields) == width + 1 and price_is_last and _is_split_decimal(fields[-2], fields[-1], row):
        price = parse_amount(f"{fields[-2]}.{fields[-1]}", what=f"line {line_number}: price")
        warnings.append(
            f"line {line_number}: price {fields[-2]},{fields[-1]} has an unquoted decimal comma; read as {price}"
        )
        return [*fields[:-2], str(price)]
    noun = "field" if len(fields) == 1 else "fields"
    raise TicketParseError(f"line {line_number}: {len(fields)} {noun}, the header has {width}")


def _too_long(line_number: int, row: dict[str, str]) -> str:
    """The message for a product_id or name over its documented limit."""
    if len(row["product_id"]) > MAX_PRODUCT_ID_CHARACTERS:
        return (f"line {line_number}: product_id of {len(row['product_id'])} characters "
                f"(at most {MAX_PRODUCT_ID_CHARACTERS})")
    return f"line {line_number}: product name of {len(row['product'])} characters (at most {MAX_PRODUCT_NAME_CHARACTERS})"


def parse_ticket(body: bytes) -> ParsedTicket:
    """Parse one ticket body, or raise TicketParseError naming the line at fault."""
    text, encoding = _decode(body)
    if "\x00" in text:
        line_number = len(_LINE_BREAK.findall(text, 0, text.index("\x00"))) + 1
        raise TicketParseError(f"line {line_number}: NUL byte in the ticket")
    lines = _LINE_BREAK.split(text)
    warnings: list[str] = []
    if encoding != "utf-8":
        warnings.append(f"body is not UTF-8; decoded as {encoding}")

    index = 0
    while index < len(lines) and not lines[index].strip():
        index += 1

    headers: dict[str, str] = {}
    spellings: dict[str, str] = {}  # lowercased key -> its first spelling, its key in `headers`
    values: dict[str, str] = {}
    header_lines: dict[str, int] = {}
    header_count = 0
    columns: dict[str, int] | None = None
    while index < len(lines) and lines[index].strip():
        line = lines[index].strip()
        key, colon, value = line.partition(":")
        if not colon:
            delimiter, column_names, columns = _read_csv_header(lines[index], index + 1)
            if columns is None:
                raise TicketParseError(f'line {index + 1}: header line {quoted(line)} is not "Key: Value"')
            warnings.append("no blank line between the header and the product section")
            break
        key = key.strip()
        if not key:
            raise TicketParseError(f"line {index + 1}: header line {quoted(line)} has no key")
        header_count += 1
        if header_count > MAX_HEADER_LINES:
            raise TicketParseError(f"line {index + 1}: more than {MAX_HEADER_LINES} header lines")
        lowered, value = key.lower(), value.strip()
        if lowered in values:
            warnings.append(f"line {index + 1}: header {key} repeated; the last value is used")
        headers[spellings.setdefault(lowered, key)] = value
        values[lowered] = value
        header_lines[lowered] = index + 1
        index += 1

    if columns is None:
        while index < len(lines) and not lines[index].strip():
            index += 1
        if index >= len(lines):
            last_text_line = max((number for number, line in enumerate(lines, 1) if line.strip()), default=1)
            raise TicketParseError(
                f"line {last_text_line}: no product section after this line (expected a blank line then a CSV header)"
            )
        delimiter, column_names, columns = _read_csv_header(lines[index], index + 1)
        if columns is None:
            missing = [column for column in REQUIRED_COLUMNS if column not in column_names]
            raise TicketParseError(
                f"line {index + 1}: CSV header has no {', '.join(missing)} column"
                f"{'s' if len(missing) > 1 else ''} (expected product,product_id,price)"
            )
    csv_header_line = index + 1
    unnamed = _unnamed_columns(column_names, csv_header_line)
    width = len(column_names)
    price_is_last = columns["price"] == width - 1
    index += 1

    ticket_lines: list[TicketLine] = []
    name_at, product_id_at, price_at = (columns[column] for column in REQUIRED_COLUMNS)
    for offset, raw_line in enumerate(lines[index:]):
        line_number = index + offset + 1
        row_text = _strip_row(raw_line, delimiter)
        if not row_text:
            continue
        fields = _csv_fields(row_text, line_number, delimiter)
        if len(fields) != width:
            fields = _fit_row(fields, width, row_text, line_number, price_is_last, warnings)
        for position in unnamed:
            if fields[position].strip():
                raise TicketParseError(
                    f"line {line_number}: field {position + 1} {quoted(fields[position].strip())}"
                    " is under a column the header leaves unnamed"
                )
        # The required columns by position, not through a dict per row (a tenth of a parse).
        name, product_id = fields[name_at].strip(), fields[product_id_at].strip()
        if not name:
            raise TicketParseError(f"line {line_number}: missing product")
        if not product_id:
            raise TicketParseError(f"line {line_number}: missing product_id")
        if len(product_id) > MAX_PRODUCT_ID_CHARACTERS or len(name) > MAX_PRODUCT_NAME_CHARACTERS:
            raise TicketParseError(_too_long(line_number, {"product_id": product_id, "product": name}))
        if len(ticket_lines) == MAX_PRODUCT_LINES:
            raise TicketParseError(f"line {line_number}: more than {MAX_PRODUCT_LINES} product lines")
        try:
            price = parse_amount(fields[price_at], what="price")
        except TicketParseError as exc:  # the line is named here: no f-string per row on the happy path
            raise TicketParseError(f"line {line_number}: {exc}") from None
        ticket_lines.append(TicketLine(line_number, product_id, name, price))
    if not ticket_lines:
        raise TicketParseError(f"line {csv_header_line}: the product section has no product lines")

    amounts: dict[str, Decimal | None] = {}
    for key in ("vat", "total"):
        if key not in values:
            amounts[key] = None
            continue
        try:
            amounts[key] = parse_amount(values[key], what=KNOWN_HEADERS[key])
        except TicketParseError as exc:
            raise TicketParseError(f"line {header_lines[key]}: {exc}") from None
    order_ref = values.get("order") or None
    for key, label in KNOWN_HEADERS.items():
        if not values.get(key):
            warnings.append(f"no {label} header")

    line_sum = sum((line.price for line in ticket_lines), Decimal("0.00"))
    total = amounts["total"]
    if total is not None and total != line_sum:
        warnings.append(f"Total {total} differs from the sum of the line prices {line_sum}")
    seen: dict[str, int] = {}
    for line in ticket_lines:
        seen[line.product_id] = seen.get(line.product_id, 0) + 1
    for product_id, count in seen.items():
        if count > 1:
            warnings.append(f"product_id {product_id} appears {count} times")

    if len(warnings) > MAX_WARNINGS:
        warnings[MAX_WARNINGS - 1:] = [f"and {len(warnings) - MAX_WARNINGS + 1} more warnings"]
    return ParsedTicket(
        order_ref=order_ref,
        vat=amounts["vat"],
        total=total,
        headers=headers,
        lines=tuple(ticket_lines),
        warnings=tuple(warnings),
        encoding=encoding,
    )
