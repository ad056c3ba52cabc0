"""libFuzzer-driven fuzzing of the parser with atheris: any exception other than
TicketParseError is a crash, and so is a rejection that does not name its line or an
accepted ticket that breaks the invariants below. Run by tests/test_bad_input.py for a
bounded number of runs; run it longer by hand with `python tests/fuzz_parser.py -runs=1000000`."""

import re
import sys

import atheris

with atheris.instrument_imports():
    from myticket.core.parser import TicketParseError, parse_ticket


NAMES_ITS_LINE = re.compile(r"line [1-9][0-9]*: ")
LINE_BREAK = re.compile(r"\r\n|\r|\n")
# Codecs that drop the byte-order mark the parser skipped.
CODECS = {"utf-8": "utf-8-sig", "utf-16-le": "utf-16", "utf-16-be": "utf-16"}


def test_one_input(data: bytes) -> None:
    try:
        ticket = parse_ticket(data)
    except TicketParseError as exc:
        assert NAMES_ITS_LINE.match(str(exc)), f"a rejection names its line: {exc}"
        return
    assert ticket.lines, "a parsed ticket always has lines"
    source_lines = LINE_BREAK.split(data.decode(CODECS.get(ticket.encoding, ticket.encoding)))
    for line in ticket.lines:
        assert line.price >= 0 and line.product_id and line.name
        # A line's fields come from the line it names, not from a neighbour: as written in
        # it (an unquoted field keeps its quotes as they are), or with doubled quotes
        # undoubled (a quoted field).
        raw = source_lines[line.line_number - 1]
        undoubled = raw.replace('""', '"')
        for value in (line.name, line.product_id):
            assert value in raw or value in undoubled, (line, raw)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
