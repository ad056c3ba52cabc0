"""Text taken from a client, made safe to quote in a log line or an error answer."""

from __future__ import annotations


def printable(text: str, limit: int = 200) -> str:
    """`text` with control characters escaped (a NUL or a newline from a client cannot
    forge or cut a line), and at most `limit` characters."""
    if not text.isprintable():
        # A byte that is not UTF-8 reaches us as a surrogate escape (U+DCxx): show it as
        # the byte it was (\xe9), not as Python's internal \udce9.
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii").replace("\\udc", "\\x")
    return text if len(text) <= limit else text[:limit] + "…"
