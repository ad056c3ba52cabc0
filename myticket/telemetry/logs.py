"""How the service's log lines look: `text` for a terminal, `json` for a log pipeline.

Both formats give the time in UTC with its zone (`2026-12-06T08:30:00.123Z`), so lines
from several hosts and processes sort together. In `json` each line is one object
(`time`, `level`, `logger`, `message`, and `ticket_id` when the line is about one
ticket, plus the access log's fields), encoded by `json.dumps`: a message holding
quotes, newlines or a client's bytes stays one valid line.

A line about one ticket passes `extra={"ticket_id": ...}`; the text format keeps the id
in the message itself, as it always did, so a grep for the id finds the line in both.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes a call site may add with `extra=` that the json format carries as fields.
EXTRA_FIELDS = ("ticket_id", "method", "path", "status", "duration_seconds", "client", "bytes", "reason", "count")


def utc_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds and Z: `2026-12-06T08:30:00.123Z`."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


class UtcTextFormatter(logging.Formatter):
    """The text format of old, with the time in UTC and its zone."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's name)
        return utc_timestamp(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback is the `exception` field of the same line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    return JsonFormatter() if log_format == "json" else UtcTextFormatter()


def configure_logging(level: str, log_format: str = "text") -> None:
    """The root logger of this process: `level`, one stderr handler in `log_format`.

    In json, Python's warnings go through logging too, so that no line escapes the format.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)
