"""Connection strings as libpq documents them: both multi-host URL forms, key/value,
target_session_attrs; split into one single-host DSN per host (libpq's own parser), and
libpq's choice among hosts as pure functions."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg2.extensions
import pytest

from myticket.config import ConfigError, load_settings, mask_password
from myticket.core.sessions import SessionState, calls_for_another_host, passes, session_matches
from myticket.db.hosts import InvalidConnectionString, parse_targets, writer_targets

from ..paths import PROJECT_ROOT

PRIMARY = SessionState(in_recovery=False, read_only=False)
READ_ONLY_PRIMARY = SessionState(in_recovery=False, read_only=True)
STANDBY = SessionState(in_recovery=True, read_only=True)


def single_hosts(connection_string: str) -> list[dict[str, str]]:
    return [psycopg2.extensions.parse_dsn(target.dsn) for target in parse_targets(connection_string).hosts]


@pytest.mark.parametrize(
    "connection_string",
    [
        "postgresql://u:p%40ss@h1:5001,h2:5002/db?target_session_attrs=read-write&sslmode=prefer",
        "postgresql://u:p%40ss@/db?host=h1,h2&port=5001,5002&target_session_attrs=read-write&sslmode=prefer",
        "host=h1,h2 port=5001,5002 dbname=db user=u password=p@ss target_session_attrs=read-write sslmode=prefer",
    ],
    ids=["url-host-list", "url-query-hosts", "key-value"],
)
def test_every_form_splits_into_one_dsn_per_host_keeping_every_other_parameter(connection_string):
    assert single_hosts(connection_string) == [
        {"host": "h1", "port": "5001", "dbname": "db", "user": "u", "password": "p@ss", "sslmode": "prefer"},
        {"host": "h2", "port": "5002", "dbname": "db", "user": "u", "password": "p@ss", "sslmode": "prefer"},
    ]
    assert parse_targets(connection_string).session_attrs == "read-write"
    assert [target.label for target in parse_targets(connection_string).hosts] == ["h1:5001", "h2:5002"]


def test_one_port_serves_every_host_and_a_missing_port_is_the_default():
    assert [hosts.get("port") for hosts in single_hosts("host=a,b,c port=6000 dbname=x")] == ["6000"] * 3
    assert [hosts.get("port") for hosts in single_hosts("postgresql://a:6000,b/x")] == ["6000", None]


def test_passfile_and_connect_timeout_stay_on_every_host():
    targets = parse_targets("postgresql://u@a,b/x?passfile=/run/secrets/pgpass&connect_timeout=3")
    assert [psycopg2.extensions.parse_dsn(t.dsn)["passfile"] for t in targets.hosts] == ["/run/secrets/pgpass"] * 2
    assert targets.connect_timeout == 3
    assert targets.timeout_or(10) == 3


def test_a_writer_asks_for_read_write_unless_the_string_says_otherwise():
    assert parse_targets("postgresql://a,b/x").session_attrs == "any"
    assert writer_targets("postgresql://a,b/x").session_attrs == "read-write"
    assert writer_targets("postgresql://a,b/x?target_session_attrs=primary").session_attrs == "primary"
    assert writer_targets("postgresql://a/x").session_attrs == "any"  # one host: used as it is


@pytest.mark.parametrize(
    ("connection_string", "message"),
    [
        ("postgresql://u@h1:p1,h2:p2/db", "port 'p1' is not a number from 1 to 65535"),
        ("host=a,b port=1,2,3", "lists 2 hosts but 3 values of port"),
        ("postgresql://h/db?target_session_attrs=writable", "target_session_attrs must be one of"),
        ("host=h password secret", 'not a PostgreSQL connection string (missing "=" after "..."'),
    ],
)
def test_malformed_strings_say_why_without_quoting_the_password(connection_string, message):
    with pytest.raises(InvalidConnectionString) as raised:
        parse_targets(connection_string)
    assert message in str(raised.value)
    assert "secret" not in str(raised.value)


def test_the_service_accepts_each_form_and_keeps_it_as_given():
    for given in ("postgresql://u@h1:5001,h2:5002/db?target_session_attrs=read-write",
                  "postgresql://u@/db?host=h1,h2&port=5001,5002&target_session_attrs=read-write",
                  "host=h1,h2 port=5001,5002 dbname=db user=u"):
        assert load_settings({"DATABASE_URL": given}).database_url == given


def test_a_bad_database_url_is_one_line_naming_it():
    with pytest.raises(ConfigError) as raised:
        load_settings({"DATABASE_URL": "postgresql://u:secret@h1:p1,h2:p2/db"})
    assert str(raised.value) == "DATABASE_URL: port 'p1' is not a number from 1 to 65535"


def test_the_cli_says_one_line_for_the_port_list_that_broke_yoyo():
    env = {**os.environ, "DATABASE_URL": "postgresql://u:secret@h1:p1,h2:p2/db"}
    result = subprocess.run([sys.executable, "-m", "myticket", "migrate"], cwd=PROJECT_ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "myticket: configuration error: DATABASE_URL: port 'p1' is not a number from 1 to 65535"
    ]


def test_passwords_are_masked_in_key_value_strings_too():
    assert mask_password("host=a,b password=s3cret dbname=x") == "host=a,b password=*** dbname=x"
    assert mask_password("host=a password='s3 cret' dbname=x") == "host=a password=*** dbname=x"
    assert mask_password("postgresql://u:s3cret@a:1,b:2/x") == "postgresql://u:***@a:1,b:2/x"


@pytest.mark.parametrize(
    ("attrs", "accepted"),
    [
        ("any", [PRIMARY, READ_ONLY_PRIMARY, STANDBY]),
        ("read-write", [PRIMARY]),
        ("primary", [PRIMARY, READ_ONLY_PRIMARY]),
        ("read-only", [READ_ONLY_PRIMARY, STANDBY]),
        ("standby", [STANDBY]),
    ],
)
def test_session_attrs_accept_what_libpq_accepts(attrs, accepted):
    assert [state for state in (PRIMARY, READ_ONLY_PRIMARY, STANDBY) if session_matches(attrs, state)] == accepted


def test_prefer_standby_looks_for_a_standby_then_takes_any():
    assert passes("prefer-standby") == ("standby", "any")
    assert passes("read-write") == ("read-write",)
    with pytest.raises(ValueError):
        passes("writable")


@pytest.mark.parametrize(
    ("sqlstate", "another_host"),
    [(None, True), ("08006", True), ("25006", True), ("57P01", True), ("57P03", True),
     ("23505", False), ("40001", False), ("53100", False), ("57014", False)],
)
def test_which_errors_make_the_pool_choose_its_host_again(sqlstate, another_host):
    assert calls_for_another_host(sqlstate) is another_host
