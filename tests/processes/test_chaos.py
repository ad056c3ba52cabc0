"""The ledger check of `make chaos`, shortened: every fault and poison at once against
one service for a few seconds, then every acknowledged ticket must be stored once,
byte for byte, with the outcome its kind must reach, and no neighbour of a poison
request may have been answered a 5xx other than 503."""

from __future__ import annotations

from pathlib import Path

from bench.chaos import chaos, table, verdict


async def test_a_short_chaos_run_loses_nothing_and_keeps_poison_alone(tmp_path: Path):
    ledger, checked, settled = await chaos(20, tmp_path, clients=8, seed=11)

    print(table(ledger, checked))  # shown by pytest when the test fails
    assert len(ledger.acked) > 100, "the run acknowledged almost nothing, so it proves little"
    assert sum(ledger.faults.values()) >= 3, ledger.faults
    assert verdict(ledger, checked, settled) == []
