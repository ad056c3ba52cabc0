"""Log lines: the two formats, the ticket id as a field, refusals summarised per second,
and the settings that choose them."""

from __future__ import annotations

import json
import logging
import re

import pytest

from myticket import config
from myticket.config import ConfigError, load_settings
from myticket.core.domain import TicketOutcome
from myticket.telemetry import logs
from myticket.telemetry.logs import JsonFormatter, UtcTextFormatter, utc_timestamp
from myticket.telemetry.outcome_log import log_outcome
from myticket.telemetry.refusal_log import RefusalLog

UTC_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str, *args, level: int = logging.INFO, **extra) -> logging.LogRecord:
    made = logging.LogRecord("myticket.test", level, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_the_time_is_utc_iso_8601_with_z():
    assert utc_timestamp(0.5) == "1970-01-01T00:00:00.500Z"
    assert UTC_TIME.match(utc_timestamp(1_800_000_000.123))


def test_a_json_line_is_one_object_with_the_fields_even_for_a_hostile_message():
    hostile = 'a "quoted"\nsecond line \\ \x00 é'
    line = JsonFormatter().format(record("ticket %s rejected: %s", "abc", hostile, ticket_id="abc"))

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "myticket.test"
    assert entry["message"] == f"ticket abc rejected: {hostile}"
    assert entry["ticket_id"] == "abc"
    assert UTC_TIME.match(entry["time"])


def test_a_json_line_without_a_ticket_has_no_ticket_id_and_a_traceback_stays_in_the_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failing = logging.LogRecord("myticket.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(failing))

    assert "ticket_id" not in entry
    assert "ValueError: boom" in entry["exception"]


def test_the_text_format_keeps_its_layout_with_a_utc_time():
    line = UtcTextFormatter().format(record("ticket %s stored", "abc", ticket_id="abc"))
    stamp, level, rest = line.split(" ", 2)

    assert UTC_TIME.match(stamp)
    assert (level, rest) == ("INFO", "myticket.test: ticket abc stored")


def test_log_format_and_access_log_settings():
    assert (load_settings({}).log_format, load_settings({}).access_log) == ("text", False)
    chosen = load_settings({"MYTICKET_LOG_FORMAT": "JSON", "MYTICKET_ACCESS_LOG": "1"})
    assert (chosen.log_format, chosen.access_log) == ("json", True)
    assert load_settings({"MYTICKET_ACCESS_LOG": "off"}).access_log is False
    with pytest.raises(ConfigError, match=r"^MYTICKET_LOG_FORMAT: must be one of text, json, got 'xml'$"):
        load_settings({"MYTICKET_LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match=r"^MYTICKET_ACCESS_LOG: must be 1 or 0"):
        load_settings({"MYTICKET_ACCESS_LOG": "maybe"})
    assert config.LOG_FORMATS == logs.LOG_FORMATS
    assert {"MYTICKET_LOG_FORMAT", "MYTICKET_ACCESS_LOG"} <= set(config.ENVIRONMENT_VARIABLES)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_refusals_is_one_line_then_one_count_per_second(caplog):
    caplog.set_level(logging.INFO, logger="myticket.test")
    clock = Clock()
    refusals = RefusalLog(interval=1.0, clock=clock)
    log = logging.getLogger("myticket.test")

    for n in range(1000):
        clock.now = 100.0 + n * 0.002  # 1000 refusals within two seconds
        refusals.refused(log, logging.INFO, "401 on POST /ticket", "401 on POST /ticket from %s: bad signature", "10.0.0.1")
    refusals.refused(log, logging.WARNING, "ticket not stored", "ticket %s not stored: %s", "t-1", "down", ticket_id="t-1")
    clock.now = 110.0
    refusals.refused(log, logging.INFO, "other", "something else")

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages[0] == (logging.INFO, "401 on POST /ticket from 10.0.0.1: bad signature")
    counted = [m for level, m in messages if "more like this" in m]
    assert sum(int(m.split(": ")[1].split()[0]) for m in counted) == 999
    assert 1 <= len(counted) <= 2  # one per elapsed second of the flood
    stored = [r for r in caplog.records if r.getMessage() == "ticket t-1 not stored: down"]
    assert len(stored) == 1 and stored[0].ticket_id == "t-1" and stored[0].levelno == logging.WARNING
    assert messages[-1] == (logging.INFO, "something else")
    assert len(messages) == len(counted) + 3


def test_every_outcome_is_logged_with_its_ticket_id_rejections_at_info(caplog):
    caplog.set_level(logging.DEBUG, logger="myticket.worker.loop")
    log_outcome(TicketOutcome("t-ok", "processed"))
    log_outcome(TicketOutcome("t-dup", "duplicate", duplicate_of="t-ok"))
    log_outcome(TicketOutcome("t-bad", "rejected", error="line 2: price 'x' is not a number"))

    lines = {r.ticket_id: (r.levelno, r.getMessage()) for r in caplog.records}
    assert lines == {
        "t-ok": (logging.DEBUG, "ticket t-ok processed"),
        "t-dup": (logging.DEBUG, "ticket t-dup duplicate of t-ok"),
        "t-bad": (logging.INFO, "ticket t-bad rejected: line 2: price 'x' is not a number"),
    }


def test_refusals_of_endless_kinds_keep_bounded_state(caplog):
    caplog.set_level(logging.INFO)
    clock = Clock()
    refusals = RefusalLog(interval=1.0, clock=clock)
    log = logging.getLogger("myticket.test")

    for n in range(5000):  # e.g. a client inventing a new method name per request
        refusals.refused(log, logging.INFO, f"404 on M{n} unmatched", "404 on M%d", n)
    clock.now += 2
    refusals.refused(log, logging.INFO, "later", "later")

    assert len(refusals.collapser._windows) <= refusals.collapser.max_kinds + 1
    summaries = [r for r in caplog.records if "more like this" in r.getMessage()]
    logged = [r for r in caplog.records if r.getMessage().startswith("404 on M")]
    assert len(logged) == refusals.collapser.max_kinds + 1  # the kinds tracked, then one for all others
    assert len(logged) + sum(r.count for r in summaries) == 5000  # every refusal logged or counted
    assert all(r.name == "myticket.test" or r.name == "myticket.telemetry.refusal_log" for r in summaries)
