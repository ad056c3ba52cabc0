"""Whether commits wait for a synchronous standby, decided from the server's settings."""

from __future__ import annotations

import pytest

from myticket.core.durability import synchronous_replication


def decide(**overrides):
    settings = {"standby_names": "*", "synchronous_commit": "on", "in_recovery": False,
                "synchronous_standbys": 1, "readable": True, **overrides}
    return synchronous_replication(**settings)


def test_a_streaming_synchronous_standby_means_commits_wait_for_it():
    state = decide()
    assert (state.configured, state.waits, state.streaming_standbys) == (True, True, 1)


@pytest.mark.parametrize(
    ("overrides", "reason_start"),
    [
        ({"standby_names": ""}, "synchronous_standby_names is empty"),
        ({"synchronous_commit": "local"}, "synchronous_commit is local"),
        ({"synchronous_commit": "off"}, "synchronous_commit is off"),
        ({"synchronous_standbys": 0}, "synchronous_standby_names is set but no synchronous standby streams"),
        ({"in_recovery": True}, "connected to a standby"),
    ],
)
def test_commits_that_do_not_wait_for_a_standby_say_why(overrides, reason_start):
    state = decide(**overrides)
    assert state.waits is False
    assert state.reason.startswith(reason_start)


@pytest.mark.parametrize("level", ["remote_write", "remote_apply"])
def test_every_waiting_level_of_synchronous_commit_counts(level):
    assert decide(synchronous_commit=level).waits is True


def test_an_unreadable_pg_stat_replication_says_configured_but_unknown():
    state = decide(readable=False, synchronous_standbys=0)
    assert (state.configured, state.waits) == (True, None)
    assert "pg_read_all_stats" in state.reason
