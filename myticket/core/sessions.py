"""Which PostgreSQL session a connection string asks for: libpq's `target_session_attrs`,
decided without I/O from what a server says of itself.

The service chooses among the listed hosts itself (see myticket.db.hosts), so it needs
libpq's rule as a function: a server in recovery is a standby; a session whose
`transaction_read_only` is on cannot write (a standby, or a primary an operator or a
failover manager turned read-only).
"""

from __future__ import annotations

from dataclasses import dataclass

SESSION_ATTRS = ("any", "read-write", "primary", "read-only", "standby", "prefer-standby")


@dataclass(frozen=True)
class SessionState:
    """What a server answered about the session opened on it."""

    in_recovery: bool
    read_only: bool


def session_matches(attrs: str, state: SessionState) -> bool:
    """Whether a session in `state` is what `attrs` asks for (one pass of libpq's rule)."""
    if attrs == "any":
        return True
    if attrs == "read-write":
        return not state.read_only
    if attrs == "read-only":
        return state.read_only
    if attrs == "primary":
        return not state.in_recovery
    if attrs == "standby":
        return state.in_recovery
    raise ValueError(f"not a single-pass target_session_attrs: {attrs!r}")


def passes(attrs: str) -> tuple[str, ...]:
    """The passes over the hosts, in order: prefer-standby looks for a standby first,
    then takes any server (as libpq does); every other value is one pass."""
    if attrs not in SESSION_ATTRS:
        raise ValueError(f"unknown target_session_attrs: {attrs!r}")
    return ("standby", "any") if attrs == "prefer-standby" else (attrs,)


def needs_probe(attrs: str) -> bool:
    """Whether choosing a host needs to ask the server about itself ("any" takes the
    first that answers)."""
    return attrs != "any"


# SQLSTATEs after which the host in use may no longer be the one wanted: the session or
# the server went away (class 08, admin or crash shutdown, cannot connect now), or the
# server refused a write because it turned read-only (a demoted primary, 25006).
_ANOTHER_HOST_CLASSES = frozenset({"08"})
_ANOTHER_HOST_CODES = frozenset({"25006", "57P01", "57P02", "57P03"})


def calls_for_another_host(sqlstate: str | None) -> bool:
    """Whether an error should make the next attempt choose the host again. No SQLSTATE
    means the server never answered (refused, reset, timed out): it may be gone for good.
    Errors of the data, races and a full disk leave the host as it is."""
    if not sqlstate:
        return True
    return sqlstate in _ANOTHER_HOST_CODES or sqlstate[:2] in _ANOTHER_HOST_CLASSES
