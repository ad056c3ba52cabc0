"""What a commit acknowledged by PostgreSQL survives: decided without I/O from the
server's replication settings.

A 202 from PostgreSQL (not the spool) means the batch's COMMIT returned. With
`synchronous_standby_names` set and `synchronous_commit` at on, remote_write or
remote_apply, COMMIT returns only once a synchronous standby has the WAL too: the
ticket survives the loss of the primary's machine. Otherwise it is on the primary's
disk only (or, with synchronous_commit off or local, on its way there).
"""

from __future__ import annotations

from dataclasses import dataclass

# synchronous_commit levels under which a commit waits for the synchronous standbys.
_WAITING_LEVELS = frozenset({"on", "remote_write", "remote_apply"})


@dataclass(frozen=True)
class SynchronousReplication:
    """What /ready and the gauge say of commits and standbys."""

    configured: bool  # commits are set to wait for a synchronous standby
    streaming_standbys: int | None  # synchronous standbys streaming now; None: not readable
    waits: bool | None  # commits wait for a standby that is there; None: cannot be read
    reason: str

    def as_json(self) -> dict:
        return {"waits": self.waits, "configured": self.configured,
                "streaming_standbys": self.streaming_standbys, "reason": self.reason}


def synchronous_replication(
    *, standby_names: str, synchronous_commit: str, in_recovery: bool, synchronous_standbys: int, readable: bool
) -> SynchronousReplication:
    """Whether commits currently wait for a synchronous standby, and why (or why not)."""
    if in_recovery:
        return SynchronousReplication(False, None, False, "connected to a standby: it takes no ticket")
    if not standby_names.strip():
        return SynchronousReplication(False, None, False, "synchronous_standby_names is empty: commits wait for "
                                      "this server's disk only")
    if synchronous_commit not in _WAITING_LEVELS:
        return SynchronousReplication(False, None, False, f"synchronous_commit is {synchronous_commit}: commits do "
                                      "not wait for a standby")
    if not readable:
        return SynchronousReplication(True, None, None, "synchronous_standby_names is set; pg_stat_replication is "
                                      "not readable by this role (grant pg_read_all_stats)")
    if synchronous_standbys == 0:
        return SynchronousReplication(True, 0, False, "synchronous_standby_names is set but no synchronous standby "
                                      "streams: commits wait until one connects")
    return SynchronousReplication(True, synchronous_standbys, True,
                                  f"commits wait for {synchronous_standbys} synchronous standby")
