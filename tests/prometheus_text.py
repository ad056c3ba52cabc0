"""Reading one sample out of the Prometheus text format: no service, no driver."""

from __future__ import annotations

import re


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one Prometheus sample in the text format, or None when absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? (?P<value>\S+)$", line)
        if not match or match["name"] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
        if found == (labels or {}):
            return float(match["value"])
    return None
