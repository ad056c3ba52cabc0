"""serve's start-up rule while PostgreSQL does not answer (a closed port, nothing
mocked): without a spool the start fails; with one it goes on, whosever the spool is,
since only a database that answers can show the spool is not its own. The refusal of
a foreign spool by a database that answers is in tests/processes/test_start_without_database.py."""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timezone

import pytest

from myticket.config import Settings, load_settings, mask_password
from myticket.core.database_errors import DatabaseUnavailable
from myticket.core.domain import DatabaseIdentity, IncomingTicket
from myticket.intake.spool import Spool
from myticket.intake.spool_file import SPOOL_FILE
from myticket.intake.startup import prepare_to_serve


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings_for(data_dir, *, spool_max_bytes: int) -> Settings:
    return load_settings({
        "DATABASE_URL": f"postgresql://myticket:secret@127.0.0.1:{closed_port()}/myticket",
        "MYTICKET_DATA_DIR": str(data_dir),
        "MYTICKET_SPOOL_MAX_BYTES": str(spool_max_bytes),
    })


def test_without_a_spool_a_database_that_does_not_answer_stops_the_start(tmp_path):
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        prepare_to_serve(settings_for(tmp_path, spool_max_bytes=0))


def test_with_a_spool_the_start_goes_on_with_the_spool_opened(tmp_path, caplog):
    settings = settings_for(tmp_path, spool_max_bytes=10_000_000)
    caplog.set_level(logging.WARNING)

    prepare_to_serve(settings)

    assert any("serving anyway" in record.getMessage() for record in caplog.records)
    assert (settings.spool_path / SPOOL_FILE).is_file()  # claimed: created, so a problem with it shows now


async def test_a_spool_of_another_database_does_not_stop_a_start_that_cannot_check_it(tmp_path, caplog):
    settings = settings_for(tmp_path, spool_max_bytes=10_000_000)
    theirs = Spool(settings.spool_path, max_bytes=10_000_000, database_url="postgresql://other@db-b/other")
    assert await theirs.claim(DatabaseIdentity("7400000000000000002", "other")) is None
    await theirs.write([IncomingTicket("id-1", datetime.now(timezone.utc), None, b"Order: 1\n")])
    await theirs.close()
    caplog.set_level(logging.WARNING)

    prepare_to_serve(settings)  # no ForeignSpool: the database has not shown who it is

    warnings = [record.getMessage() for record in caplog.records]
    assert any("holds 1 tickets for" in line and "is not used until PostgreSQL answers" in line
               for line in warnings), warnings
    assert mask_password(settings.database_url or "") in " ".join(warnings)
