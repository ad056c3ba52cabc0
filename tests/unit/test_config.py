"""Configuration comes from the environment; a bad value stops the start with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from myticket.config import (
    DEFAULT_MAX_BODY_BYTES,
    ConfigError,
    check_retention_has_archive,
    load_settings,
    mask_password,
)

from ..paths import PROJECT_ROOT


def test_defaults():
    settings = load_settings({})

    assert settings.database_url is None
    assert settings.http_host == "0.0.0.0"
    assert settings.http_port == 9098
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    assert settings.data_dir == Path(".myticket")
    assert settings.log_level == "INFO"
    assert settings.flushes_in_flight == 1
    assert (settings.run_worker, settings.worker_placement) == (True, "process")


def test_values_are_read():
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://u:p@db:5432/tickets",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": "8000",
            "MYTICKET_MAX_BODY_BYTES": "2048",
            "MYTICKET_DATA_DIR": "/var/lib/myticket",
            "LOG_LEVEL": "debug",
            "MYTICKET_FLUSHES_IN_FLIGHT": "3",
            "MYTICKET_WORKER": "Inline",
        }
    )

    assert settings.database_url == "postgresql://u:p@db:5432/tickets"
    assert (settings.http_host, settings.http_port) == ("127.0.0.1", 8000)
    assert settings.max_body_bytes == 2048
    assert settings.data_dir == Path("/var/lib/myticket")
    assert settings.log_level == "DEBUG"
    assert settings.flushes_in_flight == 3
    assert settings.worker_placement == "inline"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HTTP_PORT", "abc", "HTTP_PORT: must be a whole number, got 'abc'"),
        ("HTTP_PORT", "80.5", "HTTP_PORT: must be a whole number, got '80.5'"),
        ("HTTP_PORT", "70000", "HTTP_PORT: must be at most 65535, got 70000"),
        ("HTTP_PORT", "0", "HTTP_PORT: must be at least 1, got 0"),
        ("HTTP_PROCESSES", "100000", "HTTP_PROCESSES: must be at most 64, got 100000"),
        ("MYTICKET_WORKERS", "65", "MYTICKET_WORKERS: must be at most 64, got 65"),
        ("MYTICKET_MAX_BODY_BYTES", "0", "MYTICKET_MAX_BODY_BYTES: must be at least 1, got 0"),
        ("MYTICKET_SPOOL_MAX_BYTES", "-1", "MYTICKET_SPOOL_MAX_BYTES: must be at least 0, got -1"),
        ("MYTICKET_READ_TIMEOUT_SECONDS", "soon", "MYTICKET_READ_TIMEOUT_SECONDS: must be a number of seconds, got 'soon'"),
        ("MYTICKET_READ_TIMEOUT_SECONDS", "nan", "MYTICKET_READ_TIMEOUT_SECONDS: must be a number of seconds, got 'nan'"),
        ("MYTICKET_READ_TIMEOUT_SECONDS", "0", "MYTICKET_READ_TIMEOUT_SECONDS: must be greater than 0, got 0"),
        ("MYTICKET_READ_TIMEOUT_SECONDS", "-2.5", "MYTICKET_READ_TIMEOUT_SECONDS: must be greater than 0, got -2.5"),
        ("MYTICKET_READ_TIMEOUT_SECONDS", "4000", "MYTICKET_READ_TIMEOUT_SECONDS: must be at most 3600, got 4000"),
        ("HTTP_PROCESSES", "0", "HTTP_PROCESSES: must be at least 1, got 0"),
        ("DATABASE_URL", "mysql://u:secret@db/x", "DATABASE_URL: must start with postgresql:// or postgres://, got mysql://"),
        ("DATABASE_URL", "postgresql:///x", "DATABASE_URL: must name a host, as in postgresql://user:password@host:port/dbname"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'"),
        ("MYTICKET_WORKER", "thread", "MYTICKET_WORKER: must be one of process, inline, got 'thread'"),
        ("MYTICKET_FLUSHES_IN_FLIGHT", "17", "MYTICKET_FLUSHES_IN_FLIGHT: must be at most 16, got 17"),
        ("MYTICKET_EMBEDDED_PORT", "65536", "MYTICKET_EMBEDDED_PORT: must be at most 65535, got 65536"),
        ("MYTICKET_RETENTION_DAYS", "0", "MYTICKET_RETENTION_DAYS: must be at least 1, got 0"),
        ("MYTICKET_RETENTION_DAYS", "7d", "MYTICKET_RETENTION_DAYS: must be a whole number, got '7d'"),
        ("MYTICKET_RETENTION_DAYS", "36501", "MYTICKET_RETENTION_DAYS: must be at most 36500, got 36501"),
        ("MYTICKET_MAINTENANCE_INTERVAL_SECONDS", "0",
         "MYTICKET_MAINTENANCE_INTERVAL_SECONDS: must be greater than 0, got 0"),
        ("MYTICKET_MAINTENANCE_INTERVAL_SECONDS", "90000",
         "MYTICKET_MAINTENANCE_INTERVAL_SECONDS: must be at most 86400, got 90000"),
    ],
)
def test_bad_value_is_refused_with_the_rule_in_one_line_naming_the_variable(variable, value, message):
    with pytest.raises(ConfigError) as raised:
        load_settings({variable: value})
    assert str(raised.value) == message


def test_data_dir_that_is_a_file_is_refused_plainly(tmp_path):
    a_file = tmp_path / "state"
    a_file.write_text("")
    with pytest.raises(ConfigError) as raised:
        load_settings({"MYTICKET_DATA_DIR": str(a_file)})
    assert str(raised.value) == f"MYTICKET_DATA_DIR: must be a directory, got {str(a_file)!r}, which exists and is not one"


def test_retention_is_off_by_default_and_read_when_set(tmp_path):
    defaults = load_settings({})
    assert (defaults.retention_days, defaults.archive_dir, defaults.maintenance_interval_seconds) == (None, None, 3600)

    settings = load_settings({
        "MYTICKET_RETENTION_DAYS": "30", "MYTICKET_ARCHIVE_DIR": str(tmp_path / "archive"),
        "MYTICKET_MAINTENANCE_INTERVAL_SECONDS": "0.5",
    })
    assert (settings.retention_days, settings.archive_dir) == (30, tmp_path / "archive")
    assert settings.maintenance_interval_seconds == 0.5
    check_retention_has_archive(settings)  # no complaint


def test_archive_dir_that_is_a_file_is_refused_plainly(tmp_path):
    a_file = tmp_path / "archive"
    a_file.write_text("")
    with pytest.raises(ConfigError) as raised:
        load_settings({"MYTICKET_ARCHIVE_DIR": str(a_file)})
    assert str(raised.value) == f"MYTICKET_ARCHIVE_DIR: must be a directory, got {str(a_file)!r}, which exists and is not one"


def test_retention_without_an_archive_dir_is_refused_naming_it_and_the_explicit_way():
    with pytest.raises(ConfigError) as raised:
        check_retention_has_archive(load_settings({"MYTICKET_RETENTION_DAYS": "7"}))
    message = str(raised.value)
    assert message.startswith("MYTICKET_ARCHIVE_DIR: must be set when MYTICKET_RETENTION_DAYS is (7)")
    assert "dropping data without a copy must be explicit (`myticket purge --without-archive`)" in message


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_the_service_refuses_to_start_with_retention_but_no_archive_dir(command):
    env = {**os.environ, "MYTICKET_RETENTION_DAYS": "7", "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"}
    env.pop("MYTICKET_ARCHIVE_DIR", None)
    result = subprocess.run(
        [sys.executable, "-m", "myticket", command], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=60
    )

    assert result.returncode == 2
    [line] = result.stderr.decode().strip().splitlines()
    assert line.startswith("myticket: configuration error: MYTICKET_ARCHIVE_DIR: must be set when")
    assert line.endswith("(`myticket purge --without-archive`)")


def test_cli_stops_with_one_line_naming_the_variable():
    env = {**os.environ, "HTTP_PORT": "not-a-port"}
    result = subprocess.run(
        [sys.executable, "-m", "myticket", "serve"], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=60
    )

    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        "myticket: configuration error: HTTP_PORT: must be a whole number, got 'not-a-port'"
    ]


def test_cli_stops_with_one_line_when_the_database_is_unreachable():
    env = {**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "LOG_LEVEL": "ERROR"}
    result = subprocess.run(
        [sys.executable, "-m", "myticket", "migrate"], cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=60
    )

    assert result.returncode == 1
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("myticket: database unavailable: cannot connect to apply migrations:")


def test_password_is_masked_in_logged_urls():
    assert mask_password("postgresql://user:s3cret@db:5432/x") == "postgresql://user:***@db:5432/x"
    assert mask_password("postgresql://user@db/x") == "postgresql://user@db/x"
