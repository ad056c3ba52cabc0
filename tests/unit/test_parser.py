"""The parser is pure: these tests need no database."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from myticket.core.parser import (
    MAX_HEADER_LINES,
    MAX_PRODUCT_ID_CHARACTERS,
    MAX_PRODUCT_LINES,
    MAX_PRODUCT_NAME_CHARACTERS,
    MAX_WARNINGS,
    TicketParseError,
    parse_amount,
    parse_ticket,
)

from ..paths import REFERENCE_TICKET

REFERENCE_LINES = [("aZde", "Formule(s) midi", Decimal("14.90")), ("IZ8z", "Café", Decimal("2.00"))]


def lines_of(ticket):
    return [(line.product_id, line.name, line.price) for line in ticket.lines]


def test_the_documented_limits_themselves_are_accepted():
    at_the_limits = (
        b"Order: 1\n\nproduct,product_id,price\n"
        + b"N" * MAX_PRODUCT_NAME_CHARACTERS + b"," + b"X" * MAX_PRODUCT_ID_CHARACTERS + b",1.00\n"
        + b"".join(b"Eau,E%d,1.00\n" % n for n in range(MAX_PRODUCT_LINES - 1))
    )
    ticket = parse_ticket(at_the_limits)
    assert len(ticket.lines) == MAX_PRODUCT_LINES
    assert ticket.lines[0].product_id == "X" * MAX_PRODUCT_ID_CHARACTERS


def test_reference_ticket():
    ticket = parse_ticket(REFERENCE_TICKET)

    assert ticket.order_ref == "123456"
    assert ticket.vat == Decimal("3.10")
    assert ticket.total == Decimal("16.90")
    assert lines_of(ticket) == REFERENCE_LINES
    assert [line.line_number for line in ticket.lines] == [6, 7]
    assert ticket.warnings == ()
    assert ticket.encoding == "utf-8"
    assert ticket.headers == {"Order": "123456", "VAT": "3.10", "Total": "16.90"}


# Variants of the reference ticket that must parse to the same data.
TOLERATED = {
    "crlf": REFERENCE_TICKET.replace(b"\n", b"\r\n"),
    "cr": REFERENCE_TICKET.replace(b"\n", b"\r"),
    "utf8-bom": b"\xef\xbb\xbf" + REFERENCE_TICKET,
    "surrounding-whitespace": b"\n \n" + REFERENCE_TICKET.replace(b"Order: ", b"  Order :  ") + b"\n\n  \n",
    "several-blank-lines": REFERENCE_TICKET.replace(b"16.90\n\n", b"16.90\n\n\n \n\n"),
    "case-insensitive-keys": REFERENCE_TICKET.replace(b"Order:", b"ORDER:").replace(b"VAT:", b"vat:"),
    "columns-in-any-order": (
        b"Order: 123456\nVAT: 3.10\nTotal: 16.90\n\nPrice,Product_ID,PRODUCT\n"
        b"14.90,aZde,Formule(s) midi\n2,IZ8z,Caf\xc3\xa9\n"
    ),
    "extra-columns": (
        b"Order: 123456\nVAT: 3.10\nTotal: 16.90\n\nproduct,qty,product_id,price,note\n"
        b"Formule(s) midi,1,aZde,14.90,x\nCaf\xc3\xa9,1,IZ8z,2,\n"
    ),
    "quoted-fields-and-decimal-comma": (
        b'Order: 123456\nVAT: 3.10\nTotal: 16.90\n\nproduct,product_id,price\n'
        b'"Formule(s) midi","aZde","14,90"\n"Caf\xc3\xa9",IZ8z, 2 \n'
    ),
    "unknown-header-kept": REFERENCE_TICKET.replace(b"Total: 16.90\n", b"Total: 16.90\nCashier: Ana\n"),
    "semicolons-and-decimal-commas": (
        b"Order: 123456\nVAT: 3,10\nTotal: 16,90\n\nproduct;product_id;price\n"
        b"Formule(s) midi;aZde;14,90\nCaf\xc3\xa9;IZ8z;2\n"
    ),
    "semicolons-quoted": (
        b'Order: 123456\nVAT: 3.10\nTotal: 16.90\n\n"product"; "product_id";"price"\n'
        b'"Formule(s) midi";"aZde";"14,90"\n"Caf\xc3\xa9";IZ8z; 2 \n'
    ),
    "semicolons-extra-columns": (
        b"Order: 123456\nVAT: 3.10\nTotal: 16.90\n\nproduct;qty;product_id;price;note\n"
        b"Formule(s) midi;1;aZde;14,90;x, y\nCaf\xc3\xa9;1;IZ8z;2;\n"
    ),
    "tabs": REFERENCE_TICKET.replace(b",", b"\t"),
    "tabs-crlf": REFERENCE_TICKET.replace(b",", b"\t").replace(b"\n", b"\r\n"),
}


@pytest.mark.parametrize("body", TOLERATED.values(), ids=TOLERATED.keys())
def test_tolerated_variants_parse_like_the_reference(body):
    ticket = parse_ticket(body)

    assert ticket.order_ref == "123456"
    assert (ticket.vat, ticket.total) == (Decimal("3.10"), Decimal("16.90"))
    assert lines_of(ticket) == REFERENCE_LINES
    assert ticket.warnings == ()


def test_unknown_headers_are_kept():
    ticket = parse_ticket(TOLERATED["unknown-header-kept"])
    assert ticket.headers["Cashier"] == "Ana"


def test_a_repeated_header_is_parsed_and_stored_with_its_last_value():
    body = REFERENCE_TICKET.replace(b"Total: 16.90\n", b"Total: 16.90\nvat: 3.20\nORDER: 654321\n")
    ticket = parse_ticket(body)

    assert (ticket.order_ref, ticket.vat) == ("654321", Decimal("3.20"))
    assert ticket.headers == {"Order": "654321", "VAT": "3.20", "Total": "16.90"}
    assert "line 4: header vat repeated; the last value is used" in ticket.warnings
    assert "line 5: header ORDER repeated; the last value is used" in ticket.warnings


def test_header_value_may_contain_colons():
    ticket = parse_ticket(REFERENCE_TICKET.replace(b"Order: 123456", b"Order: 2024:11:26-0042"))
    assert ticket.order_ref == "2024:11:26-0042"


def test_quoted_field_with_comma_and_doubled_quotes():
    body = b'Order: 1\nTotal: 3.50\n\nproduct,product_id,price\n"Pain, ""tradition""",PT1,3.50\n'
    ticket = parse_ticket(body)
    assert lines_of(ticket) == [("PT1", 'Pain, "tradition"', Decimal("3.50"))]


def test_semicolon_rows_keep_quoted_semicolons_and_commas():
    body = b'Order: 1\nTotal: 3.50\n\nproduct;product_id;price\n"Pain; ""tradition"", bio";PT1;3,50\n'
    ticket = parse_ticket(body)
    assert lines_of(ticket) == [("PT1", 'Pain; "tradition", bio', Decimal("3.50"))]


def test_a_tab_delimiting_an_empty_first_field_is_kept():
    body = b"Order: 1\n\nproduct\tproduct_id\tprice\n\tB\t1\n"
    with pytest.raises(TicketParseError, match="^line 4: missing product$"):
        parse_ticket(body)


@pytest.mark.parametrize(("bom", "encoding"), [(b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")])
def test_utf16_body_with_a_byte_order_mark_is_decoded_with_a_warning(bom, encoding):
    ticket = parse_ticket(bom + REFERENCE_TICKET.decode("utf-8").encode(encoding))

    assert lines_of(ticket) == REFERENCE_LINES
    assert [line.line_number for line in ticket.lines] == [6, 7]
    assert (ticket.order_ref, ticket.total) == ("123456", Decimal("16.90"))
    assert ticket.encoding == encoding
    assert ticket.warnings == (f"body is not UTF-8; decoded as {encoding}",)


def test_cp1252_body_is_decoded_with_a_warning():
    ticket = parse_ticket(REFERENCE_TICKET.decode("utf-8").encode("cp1252"))

    assert lines_of(ticket) == REFERENCE_LINES
    assert ticket.encoding == "cp1252"
    assert ticket.warnings == ("body is not UTF-8; decoded as cp1252",)


@pytest.mark.parametrize(
    ("body", "warning"),
    [
        (REFERENCE_TICKET.replace(b"16.90", b"17.00"), "Total 17.00 differs from the sum of the line prices 16.90"),
        (REFERENCE_TICKET.replace(b"Order: 123456\n", b""), "no Order header"),
        (REFERENCE_TICKET.replace(b"VAT: 3.10\n", b""), "no VAT header"),
        (REFERENCE_TICKET + b"Caf\xc3\xa9,IZ8z,2.10\n", "product_id IZ8z appears 2 times"),
        (REFERENCE_TICKET.replace(b"16.90\n\n", b"16.90\n"), "no blank line between the header and the product section"),
        (
            REFERENCE_TICKET.replace(b"16.90\n\n", b"16.90\n").replace(b",", b";"),
            "no blank line between the header and the product section",
        ),
        (REFERENCE_TICKET.replace(b"VAT: 3.10\n", b"VAT: 3.10\nvat: 3.20\n"), "line 3: header vat repeated; the last value is used"),
    ],
    ids=["total-mismatch", "no-order", "no-vat", "repeated-product", "no-blank-line", "no-blank-line-semicolons",
         "repeated-header"],
)
def test_warnings_never_reject(body, warning):
    ticket = parse_ticket(body)
    assert warning in ticket.warnings
    assert ticket.lines


REJECTED = {
    "price-not-number": (REFERENCE_TICKET.replace(b"2\n", b"abc\n"), 'line 7: price "abc" is not a number'),
    "price-negative": (REFERENCE_TICKET.replace(b",2\n", b",-2\n"), 'line 7: price "-2" is negative'),
    "price-empty": (REFERENCE_TICKET.replace(b",2\n", b",\n"), "line 7: price is empty"),
    "price-3-decimals": (
        REFERENCE_TICKET.replace(b",2\n", b",2.005\n"),
        'line 7: price "2.005" has more than 2 decimals',
    ),
    "price-too-large": (
        REFERENCE_TICKET.replace(b",2\n", b",99999999999\n"),
        'line 7: price "99999999999" is too large',
    ),
    "missing-product-id": (REFERENCE_TICKET.replace(b",aZde,", b",,"), "line 6: missing product_id"),
    "product-id-over-the-limit": (
        REFERENCE_TICKET.replace(b",IZ8z,", b"," + b"X" * (MAX_PRODUCT_ID_CHARACTERS + 1) + b","),
        f"line 7: product_id of {MAX_PRODUCT_ID_CHARACTERS + 1} characters (at most {MAX_PRODUCT_ID_CHARACTERS})",
    ),
    "product-name-over-the-limit": (
        REFERENCE_TICKET.replace(b"Formule(s) midi,", b"N" * (MAX_PRODUCT_NAME_CHARACTERS + 1) + b","),
        f"line 6: product name of {MAX_PRODUCT_NAME_CHARACTERS + 1} characters (at most {MAX_PRODUCT_NAME_CHARACTERS})",
    ),
    "more-lines-than-the-limit": (
        REFERENCE_TICKET + b"".join(b"Eau,E%d,1.00\n" % n for n in range(MAX_PRODUCT_LINES - 1)),
        f"line {MAX_PRODUCT_LINES + 6}: more than {MAX_PRODUCT_LINES} product lines",
    ),
    "missing-product": (REFERENCE_TICKET.replace(b"Formule(s) midi,", b","), "line 6: missing product"),
    "short-row": (REFERENCE_TICKET.replace(b",IZ8z,2\n", b"\n"), "line 7: 1 field, the header has 3"),
    "short-row-2-fields": (REFERENCE_TICKET + b"Eau,E1\n", "line 8: 2 fields, the header has 3"),
    "long-row-words": (
        REFERENCE_TICKET.replace(b",2\n", b",1.50,extra,fields\n"),
        "line 7: 5 fields, the header has 3",
    ),
    "long-row-two-extra": (REFERENCE_TICKET.replace(b",2\n", b",1,50,7\n"), "line 7: 5 fields, the header has 3"),
    "long-row-3-decimals": (REFERENCE_TICKET.replace(b",2\n", b",1,500\n"), "line 7: 4 fields, the header has 3"),
    "long-row-units-not-digits": (
        REFERENCE_TICKET.replace(b",2\n", b",1a,50\n"),
        "line 7: 4 fields, the header has 3",
    ),
    "long-row-dotted-units": (REFERENCE_TICKET.replace(b",2\n", b",1.5,0\n"), "line 7: 4 fields, the header has 3"),
    "long-row-spaced-comma": (REFERENCE_TICKET.replace(b",2\n", b",1, 50\n"), "line 7: 4 fields, the header has 3"),
    "long-row-quoted-units": (REFERENCE_TICKET.replace(b",2\n", b',"1",50\n'), "line 7: 4 fields, the header has 3"),
    "long-row-non-ascii-cents": (
        REFERENCE_TICKET.replace(b",2\n", b",1,\xd9\xa5\n"),
        "line 7: 4 fields, the header has 3",
    ),
    "long-row-non-ascii-units": (
        REFERENCE_TICKET.replace(b",2\n", b",\xd9\xa1,50\n"),
        "line 7: 4 fields, the header has 3",
    ),
    "long-row-empty-extra": (REFERENCE_TICKET.replace(b",2\n", b",2,\n"), "line 7: 4 fields, the header has 3"),
    "long-row-price-not-last": (
        b"Order: 1\n\nproduct,price,product_id\nA,14,90,7\n",
        "line 4: 4 fields, the header has 3",
    ),
    "header-price-twice": (
        b"Order: 1\n\nproduct,product_id,price,PRICE\nA,B,14,90\n",
        "line 3: CSV header has 2 price columns",
    ),
    "semicolon-long-row": (b"Order: 1\n\nproduct;product_id;price\nA;B;14;90\n", "line 4: 4 fields, the header has 3"),
    "commas-under-semicolon-header": (
        b"Order: 1\n\nproduct;product_id;price\nA,B,14.90\n",
        "line 4: 1 field, the header has 3",
    ),
    "semicolon-missing-column": (
        b"Order: 1\n\nproduct;id;price\nA;B;1\n",
        "line 3: CSV header has no product_id column",
    ),
    "tab-trailing-field": (
        b"Order: 1\n\nproduct\tproduct_id\tprice\nA\tB\t1\t\n",
        "line 4: 4 fields, the header has 3",
    ),
    "ambiguous-delimiter": (
        b"Order: 1\n\nproduct,product_id,price,a;product;product_id;price\nA,B,1,x\n",
        "line 3: CSV header has the required columns with both ',' and ';' as delimiter",
    ),
    "malformed-header": (b'Order: 1\n\n"product,product_id,price\nA,B,1\n', "line 3: malformed CSV"),
    "value-under-unnamed-column": (
        b"Order: 1\n\nproduct,product_id,price,\nA,B,14,90\n",
        'line 4: field 4 "90" is under a column the header leaves unnamed',
    ),
    "no-product-section": (
        b"Order: 1\nVAT: 1\nTotal: 2\n",
        "line 3: no product section after this line (expected a blank line then a CSV header)",
    ),
    "only-blank-lines": (
        b"Order: 1\nTotal: 2\n\n\n  \n",
        "line 2: no product section after this line (expected a blank line then a CSV header)",
    ),
    "no-lines": (b"Order: 1\n\nproduct,product_id,price\n\n", "line 3: the product section has no product lines"),
    "missing-column": (b"Order: 1\n\nproduct,id,price\nA,B,1\n", "line 3: CSV header has no product_id column"),
    "bad-header-line": (
        b"Order: 1\nthis is not a header\n\nproduct,product_id,price\nA,B,1\n",
        'line 2: header line "this is not a header" is not "Key: Value"',
    ),
    "header-without-key": (
        b"Order: 1\n: 5\n\nproduct,product_id,price\nA,B,1\n",
        'line 2: header line ": 5" has no key',
    ),
    "vat-not-number": (REFERENCE_TICKET.replace(b"VAT: 3.10", b"VAT: three"), 'line 2: VAT "three" is not a number'),
    "total-empty": (REFERENCE_TICKET.replace(b"Total: 16.90", b"Total:"), "line 3: Total is empty"),
    "repeated-total-bad": (
        REFERENCE_TICKET.replace(b"Total: 16.90\n", b"Total: 16.90\nCashier: Ana\nTOTAL: 1,2,3\n"),
        'line 5: Total "1,2,3" is not a number',
    ),
    "bad-quotes": (b"Order: 1\n\nproduct,product_id,price\n\"A,B,1\n", "line 4: malformed CSV"),
    "nul-byte": (REFERENCE_TICKET.replace(b"Caf\xc3\xa9", b"Ca\x00f"), "line 7: NUL byte in the ticket"),
    "nul-byte-cr-lines": (
        REFERENCE_TICKET.replace(b"\n", b"\r").replace(b"Caf\xc3\xa9", b"Ca\x00f"),
        "line 7: NUL byte in the ticket",
    ),
    "not-text": (
        b"Order: \x81\x8d\x8f\n",
        "line 1: body is neither UTF-8 nor cp1252 text (byte 0x81 at offset 7)",
    ),
    "not-text-line-3": (
        b"Order: 1\r\nVAT: 1\rTotal: \x81\n",
        "line 3: body is neither UTF-8 nor cp1252 text (byte 0x81 at offset 24)",
    ),
    "utf-16-odd-length": (
        b"\xff\xfe" + "Order: 1\r\nVAT".encode("utf-16-le") + b"A",
        "line 2: body starts with a UTF-16 byte-order mark but is not UTF-16 text (truncated data at offset 28)",
    ),
    "utf-16-without-bom": (REFERENCE_TICKET.decode("utf-8").encode("utf-16-le"), "line 1: NUL byte in the ticket"),
    "empty": (b"", "line 1: no product section after this line (expected a blank line then a CSV header)"),
}


@pytest.mark.parametrize(("body", "message"), REJECTED.values(), ids=REJECTED.keys())
def test_rejections_say_where_and_why(body, message):
    with pytest.raises(TicketParseError) as raised:
        parse_ticket(body)
    assert str(raised.value).startswith(message)


DECIMAL_COMMA_ROWS = {
    "two-cents": (b"product,product_id,price\nFormule midi,M009,14,90\n", "14,90", Decimal("14.90")),
    "one-cent-digit": (b"product,product_id,price\nFormule midi,M009,14,9\n", "14,9", Decimal("14.90")),
    "extra-columns-before-price": (
        b"product,qty,product_id,price\nFormule midi,1,M009,14,90\n", "14,90", Decimal("14.90"),
    ),
    "quoted-name": (b'product,product_id,price\n"Formule, midi",M009,14,05\n', "14,05", Decimal("14.05")),
}


@pytest.mark.parametrize(("csv_part", "written", "price"), DECIMAL_COMMA_ROWS.values(), ids=DECIMAL_COMMA_ROWS.keys())
def test_unquoted_decimal_comma_in_a_last_price_column_is_read_with_a_warning(csv_part, written, price):
    # No Total header: the warning about the comma is the only hint there is.
    ticket = parse_ticket(b"Order: 9\n\n" + csv_part)

    assert [(line.product_id, line.price) for line in ticket.lines] == [("M009", price)]
    assert f"line 4: price {written} has an unquoted decimal comma; read as {price}" in ticket.warnings


def test_rows_under_a_header_with_extra_columns_may_leave_them_empty():
    body = b"Order: 1\n\nproduct,product_id,price,\nA,B,14.90,\nC,D,2, \n"
    ticket = parse_ticket(body)
    assert [line.price for line in ticket.lines] == [Decimal("14.90"), Decimal("2.00")]


@pytest.mark.parametrize(
    ("raw", "amount"),
    [("2", "2.00"), ("14.90", "14.90"), (" 4 ", "4.00"), ("14,90", "14.90"), ("+1.5", "1.50"), ("0", "0.00")],
)
def test_amounts_are_decimals(raw, amount):
    value = parse_amount(raw, what="price")
    assert isinstance(value, Decimal)
    assert value == Decimal(amount)


NAMES_ITS_LINE = re.compile(r"line [1-9][0-9]*: ")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_ticket_or_a_parse_error(body):
    try:
        ticket = parse_ticket(body)
    except TicketParseError as exc:
        assert NAMES_ITS_LINE.match(str(exc)), str(exc)
    else:
        assert ticket.lines


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r", b",", b";", b"\t", b":", b'"', b" ", b"Order", b"VAT", b"Total",
                                 b"price", b"product", b"product_id", b"1", b"90", b".", b"\xc3\xa9", b"\xe9", b"\x00",
                                 b"-"]), max_size=60))
def test_ticket_shaped_noise_gives_a_ticket_or_a_parse_error(parts):
    try:
        parse_ticket(b"".join(parts))
    except TicketParseError as exc:
        assert NAMES_ITS_LINE.match(str(exc)), str(exc)


text_field = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters='\x85"'),
    min_size=1, max_size=20,
).map(str.strip).filter(bool)
price = st.decimals(min_value=0, max_value=Decimal("99999.99"), places=2, allow_nan=False, allow_infinity=False)


@settings(max_examples=200, deadline=None)
@given(
    order=st.text(alphabet="ABCDEFGHIJ0123456789-:/", min_size=1, max_size=20),
    vat=price,
    lines=st.lists(st.tuples(text_field, text_field, price), min_size=1, max_size=8),
    newline=st.sampled_from(["\n", "\r\n"]),
    delimiter=st.sampled_from([",", ";", "\t"]),
)
def test_generated_tickets_parse_back_to_what_generated_them(order, vat, lines, newline, delimiter):
    total = sum((line_price for _, _, line_price in lines), Decimal("0.00"))
    rows = [f"Order: {order}", f"VAT: {vat}", f"Total: {total}", "", delimiter.join(("product", "product_id", "price"))]
    for name, product_id, line_price in lines:
        quoted = delimiter.join('"' + field.replace('"', '""') + '"' for field in (name, product_id))
        rows.append(f"{quoted}{delimiter}{line_price}")
    body = newline.join(rows).encode("utf-8")

    ticket = parse_ticket(body)

    assert ticket.order_ref == order.strip()
    assert ticket.vat == vat
    assert ticket.total == total
    assert lines_of(ticket) == [(product_id, name, line_price) for name, product_id, line_price in lines]
    assert not any(warning.startswith("Total") for warning in ticket.warnings)


@st.composite
def damaged_csv_tickets(draw):
    """A product section in one of the delimiters, with extra columns in any order and rows
    that may have a field too many or too few, or an unquoted decimal-comma price. No
    quotes: splitting a row's text by the delimiter gives exactly the fields it holds.
    Returns the body, the delimiter, the columns, each row's text and whether each row
    holds exactly the fields it was made of (no damage, no comma cutting the price)."""
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    extra_columns = draw(st.sampled_from([(), ("qty",), ("qty", "note")]))
    columns = draw(st.permutations(["product", "product_id", "price", *extra_columns]))
    chars = st.sampled_from([char for char in "abXY 019.,;-\u00e9\t" if char != delimiter])
    text = st.text(chars, max_size=5)
    leading = st.sampled_from("AB01")
    rows, intact = [], []
    for _ in range(draw(st.integers(1, 4))):
        units = draw(st.integers(0, 9999))
        cents = draw(st.sampled_from(["", "5", "50", "05"]))
        values = {
            "product": draw(leading) + draw(text),
            "product_id": draw(leading) + draw(text),
            "price": f"{units}{draw(st.sampled_from('.,'))}{cents}" if cents else str(units),
        }
        fields = [values[column] if column in values else draw(text) for column in columns]
        made_of = list(fields)
        damage = draw(st.sampled_from(["none", "none", "extra", "missing"]))
        if damage == "extra":
            fields += draw(st.lists(st.one_of(text, st.sampled_from(["5", "50", "123"])), min_size=1, max_size=2))
        elif damage == "missing":
            del fields[draw(st.integers(0, len(fields) - 1))]
        rows.append(delimiter.join(fields))
        intact.append(rows[-1].split(delimiter) == made_of)
    body = "Order: 1\n\n" + delimiter.join(columns) + "\n" + "\n".join(rows) + "\n"
    return body.encode("utf-8"), delimiter, columns, rows, intact


@settings(max_examples=400, deadline=None)
@given(damaged_csv_tickets())
def test_no_accepted_ticket_loses_a_field_of_its_rows(generated):
    body, delimiter, columns, rows, intact = generated
    width = len(columns)
    written = [row.split(delimiter) for row in rows]
    try:
        ticket = parse_ticket(body)
    except TicketParseError as exc:
        # Only a damaged row may cost the ticket.
        assert not all(intact), str(exc)
        return

    assert [line.line_number for line in ticket.lines] == list(range(4, 4 + len(rows)))
    for line, fields in zip(ticket.lines, written):
        if len(fields) == width:
            # Every field sits under its own column: nothing cut off, nothing shifted out.
            price_text = fields[columns.index("price")].strip()
            assert line.price == Decimal(price_text.replace(",", ".")).quantize(Decimal("0.01"))
        else:
            # The one tolerated difference: a decimal comma cut a last-column price in two.
            assert (len(fields), delimiter, columns[-1]) == (width + 1, ",", "price")
            units, cents = fields[-2:]
            assert line.price == Decimal(f"{units}.{cents}")
            assert (
                f"line {line.line_number}: price {units},{cents} has an unquoted decimal comma; read as {line.price}"
                in ticket.warnings
            )
        assert line.name == fields[columns.index("product")].strip()
        assert line.product_id == fields[columns.index("product_id")].strip()


@pytest.mark.parametrize(
    "body",
    [
        b"a" * 1_000_000,  # one header line of a megabyte
        b"Order: 1\n\nproduct,product_id,price\nA,B," + b"9" * 100_000 + b"x\n",  # a price of 100 kB
    ],
    ids=["megabyte-header-line", "100-kB-price"],
)
def test_a_rejection_quotes_at_most_a_short_piece_of_the_ticket(body):
    with pytest.raises(TicketParseError) as rejection:
        parse_ticket(body)
    message = str(rejection.value)
    assert message.startswith("line ")
    assert len(message) < 200, message[:300]
    assert "characters)" in message  # says how long the quoted text really was


def test_more_header_lines_than_the_limit_is_rejected_naming_the_line():
    body = b"X: 1\n" * (MAX_HEADER_LINES + 1) + b"\nproduct,product_id,price\nA,B,1\n"
    with pytest.raises(TicketParseError, match=rf"^line {MAX_HEADER_LINES + 1}: more than {MAX_HEADER_LINES} header lines$"):
        parse_ticket(body)


def test_warnings_are_capped_and_the_rest_counted():
    rows = b"".join(b"A,B%d,14,90\n" % n for n in range(200))  # one decimal-comma warning each
    ticket = parse_ticket(b"Order: 1\n\nproduct,product_id,price\n" + rows)
    assert len(ticket.lines) == 200
    assert len(ticket.warnings) == MAX_WARNINGS
    # 200 decimal commas, no VAT, no Total: 202 warnings, of which MAX_WARNINGS - 1 are kept.
    assert ticket.warnings[-1] == f"and {202 - (MAX_WARNINGS - 1)} more warnings"


def test_amounts_read_before_come_from_a_bounded_memory_and_refusals_are_never_remembered(monkeypatch):
    from myticket.core import parser

    monkeypatch.setattr(parser, "_known_amounts", {})
    monkeypatch.setattr(parser, "MAX_KNOWN_AMOUNTS", 3)
    assert parser.parse_amount(" 14,9 ", what="price") == Decimal("14.90")
    assert parser.parse_amount(" 14,9 ", what="price") == Decimal("14.90")
    for _ in range(2):
        with pytest.raises(TicketParseError, match="has more than 2 decimals"):
            parser.parse_amount("1.999", what="price")
    assert "1.999" not in parser._known_amounts
    for cents in range(10):
        assert parser.parse_amount(f"1.{cents}", what="price") == Decimal(f"1.{cents}0")
        assert len(parser._known_amounts) <= 3
