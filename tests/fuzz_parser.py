"""libFuzzer-driven fuzzing of the parser with atheris: any exception other than
TicketParseError is a crash, and so is a rejection that does not name its line or an
accepted ticket that breaks the invariants below. Run by tests/test_bad_input.py for a
bounded number of runs; run it longer by hand with `python tests/fuzz_parser.py -runs=1000000`."""

import re
import sys

import atheris

with atheris.instrument_imports():
    from myticket.parser import TicketParseError, parse_ticket


NAMES_ITS_LINE = re.compile(r"line [1-9][0-9]*: ")


def test_one_input(data: bytes) -> None:
    try:
        ticket = parse_ticket(data)
    except TicketParseError as exc:
        assert NAMES_ITS_LINE.match(str(exc)), f"a rejection names its line: {exc}"
        return
    assert ticket.lines, "a parsed ticket always has lines"
    for line in ticket.lines:
        assert line.price >= 0 and line.product_id and line.name


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
