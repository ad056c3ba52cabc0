"""Where the database is: the hosts a connection string lists, tried one at a time.

libpq accepts several hosts in one connection string (the URL forms
`postgresql://u@h1:p1,h2:p2/db` and `postgresql://u@/db?host=h1,h2&port=p1,p2`, or
key/value `host=h1,h2 port=p1,p2 dbname=db`) and keeps the first whose session matches
`target_session_attrs`. The tools around it do not: yoyo's URL parser fails on the
port list, and aiopg's asynchronous connect loses track of the socket when libpq moves
on to the next host. So the string is read here with libpq's own parser and split into
one single-host DSN per host (every other parameter kept: user, password, passfile,
sslmode, ...), and the host is chosen by us, one plain connection attempt at a time.

Messages never quote the string: it may hold a password.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass

import psycopg2
import psycopg2.extensions

from ..core.sessions import SESSION_ATTRS, SessionState, needs_probe, passes, session_matches
from .resources import load_queries

log = logging.getLogger(__name__)

# What a service that writes asks for when the string says nothing and lists several
# hosts: the writable one (libpq's own default, "any", would keep a demoted primary).
WRITER_SESSION_ATTRS = "read-write"
# How long one host may take to accept a connection unless the string says (connect_timeout).
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10


class InvalidConnectionString(ValueError):
    """The connection string cannot be used; the message says why without quoting it."""


@dataclass(frozen=True)
class Target:
    """One host of the list, as a DSN libpq connects to without choosing anything."""

    dsn: str = ""
    label: str = ""

    def __repr__(self) -> str:  # the DSN may carry a password
        return f"Target({self.label!r})"


@dataclass(frozen=True)
class Targets:
    """The hosts in the order listed, and the kind of session wanted."""

    hosts: tuple[Target, ...]
    session_attrs: str
    # The string's own connect_timeout, which wins over the caller's default.
    connect_timeout: float | None = None

    def timeout_or(self, default: float) -> float:
        return self.connect_timeout if self.connect_timeout else default


def _split(value: str | None) -> list[str]:
    return [] if value is None else value.split(",")


def _spread(name: str, values: list[str], count: int) -> list[str | None]:
    """A per-host list: one value for every host, or one value per host (libpq's rule)."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise InvalidConnectionString(f"lists {count} hosts but {len(values)} values of {name}")
    return list(values)


def _check_port(port: str | None) -> None:
    if port is None or port == "":
        return
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidConnectionString(f"port {port!r} is not a number from 1 to 65535")


_QUOTED = re.compile(r'"([^"]*)"')


def _redact(match: re.Match) -> str:
    return match.group(0) if match.group(1) == "=" else '"..."'


def parse_targets(connection_string: str, *, default_session_attrs: str = "any") -> Targets:
    """The hosts of a URL or key/value connection string, each as a single-host DSN.

    `default_session_attrs` applies when the string has no target_session_attrs (and
    PGTARGETSESSIONATTRS does not say either: libpq reads it when the string is silent).
    """
    try:
        params = psycopg2.extensions.parse_dsn(connection_string)
    except psycopg2.ProgrammingError as exc:
        # libpq quotes the fragment it stopped at, which may be a password: left out.
        reason = _QUOTED.sub(_redact, " ".join(str(exc).split()).removeprefix("invalid dsn: "))
        raise InvalidConnectionString(f"not a PostgreSQL connection string ({reason})") from None
    session_attrs = params.pop("target_session_attrs", None) or default_session_attrs
    if session_attrs not in SESSION_ATTRS:
        raise InvalidConnectionString(
            f"target_session_attrs must be one of {', '.join(SESSION_ATTRS)}, got {session_attrs!r}"
        )
    connect_timeout = params.get("connect_timeout")
    if connect_timeout is not None and not connect_timeout.strip().isdigit():
        raise InvalidConnectionString(f"connect_timeout must be a whole number of seconds, got {connect_timeout!r}")
    hosts = _split(params.pop("host", None))
    addresses = _split(params.pop("hostaddr", None))
    count = max(len(hosts), len(addresses), 1)
    hosts_per = _spread("host", hosts, count)
    addresses_per = _spread("hostaddr", addresses, count)
    ports_per = _spread("port", _split(params.pop("port", None)), count)
    targets = []
    for host, address, port in zip(hosts_per, addresses_per, ports_per):
        _check_port(port)
        single = {key: value for key, value in (("host", host), ("hostaddr", address), ("port", port)) if value}
        dsn = psycopg2.extensions.make_dsn(**params, **single)
        label = f"{host or address or 'local socket'}:{port or 'default port'}"
        targets.append(Target(dsn, label))
    return Targets(tuple(targets), session_attrs, int(connect_timeout) if connect_timeout is not None else None)


def names_a_host(connection_string: str) -> bool:
    """Whether the string itself says where the server is (host or hostaddr)."""
    params = psycopg2.extensions.parse_dsn(connection_string)
    return any(params.get(key, "").replace(",", "").strip() for key in ("host", "hostaddr"))


def writer_targets(connection_string: str) -> Targets:
    """The hosts for a service that writes: with several hosts listed, read-write unless
    the string says otherwise; one host is used as it is (as before: no probe)."""
    targets = parse_targets(connection_string)
    if len(targets.hosts) > 1 and "target_session_attrs" not in psycopg2.extensions.parse_dsn(connection_string):
        return dataclasses.replace(targets, session_attrs=WRITER_SESSION_ATTRS)
    return targets


_PASSWORD_VALUE = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def mask_key_value_password(dsn: str) -> str:
    """A key/value DSN with its password's value replaced, for log lines."""
    return _PASSWORD_VALUE.sub(r"\1***", dsn)


def session_state(connection) -> SessionState:
    """Ask a psycopg2 session's server what it is (autocommit, so no transaction is left)."""
    with connection.cursor() as cursor:
        cursor.execute(load_queries()["session_state"])
        in_recovery, read_only = cursor.fetchone()
    return SessionState(in_recovery=bool(in_recovery), read_only=bool(read_only))


class NoMatchingHost(psycopg2.OperationalError):
    """No listed host answered with the session asked for. A driver error without
    SQLSTATE, so the repository and the start-up check call the database unavailable."""


def no_match(targets: Targets, failures: list[str]) -> NoMatchingHost:
    return NoMatchingHost(
        f"no {targets.session_attrs} server among {len(targets.hosts)} hosts: " + "; ".join(failures)
    )


def connect_chosen(
    connection_string: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_SECONDS
):
    """A psycopg2 connection (autocommit) to the first listed host whose session matches
    target_session_attrs (read-write for a host list that does not say); NoMatchingHost (an OperationalError)
    when none does. For the synchronous sessions: migrations, the start-up check."""
    targets = writer_targets(connection_string)
    failures: list[str] = []
    for wanted in passes(targets.session_attrs):
        for target in targets.hosts:
            try:
                connection = psycopg2.connect(target.dsn, connect_timeout=int(targets.timeout_or(connect_timeout)))
            except psycopg2.OperationalError as exc:
                failures.append(f"{target.label}: {' '.join(str(exc).split())}")
                continue
            connection.autocommit = True
            try:
                if not needs_probe(wanted) or session_matches(wanted, session_state(connection)):
                    return connection, target
                failures.append(f"{target.label}: not {wanted}")
            except psycopg2.Error as exc:
                failures.append(f"{target.label}: {' '.join(str(exc).split())}")
            connection.close()
    raise no_match(targets, failures)
