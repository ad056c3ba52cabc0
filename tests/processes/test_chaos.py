"""The ledger check of `make chaos`, shortened: every fault and poison at once against
one service for a few seconds, then every acknowledged ticket must be stored once,
byte for byte, with the outcome its kind must reach, and no neighbour of a poison
request may have been answered a 5xx other than 503. Among them one ticket that kills
the worker (sent at the start of the faults): it must end rejected after the worker's
deaths, with the other tickets processed, nobody intervening but the worker's
supervisor. It runs bench/chaos.py as `make chaos` does, as a command: its exit code is
its verdict."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from ..environment import child_environment
from ..paths import PROJECT_ROOT

SECONDS_OF_FAULTS = 20
# The faults, then the time the service takes to settle, within pytest's 300 s per test
# (chaos.py itself would wait up to 300 s for the service to settle).
RUN_TIMEOUT_SECONDS = 270


def run_chaos(workdir: Path) -> tuple[int, str]:
    """bench/chaos.py to its end, its temporary files under `workdir`. Past the timeout
    it gets Ctrl-C, so that it stops the service and the PostgreSQL it started."""
    process = subprocess.Popen(
        [sys.executable, "bench/chaos.py", "--seconds", str(SECONDS_OF_FAULTS), "--clients", "8", "--seed", "11"],
        cwd=PROJECT_ROOT, env=child_environment(TMPDIR=str(workdir)), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        raise AssertionError(f"bench/chaos.py ran past {RUN_TIMEOUT_SECONDS} s:\n{output}") from None
    return process.returncode, output


async def test_a_short_chaos_run_loses_nothing_and_keeps_poison_alone(tmp_path: Path):
    exit_code, output = await asyncio.to_thread(run_chaos, tmp_path)

    print(output)  # the table, shown by pytest when the test fails
    assert exit_code == 0, output
    ledger = re.search(r"^(\d+) tickets acknowledged; lost: (\d+)$", output, re.MULTILINE)
    assert ledger is not None, output
    acknowledged, lost = int(ledger[1]), int(ledger[2])
    assert acknowledged > 100, "the run acknowledged almost nothing, so it proves little"
    assert lost == 0
    # The table's two-column rows: "| fault injected | times |".
    faults = {fault: int(times) for fault, times in re.findall(r"^\| ([^|]+) \| (\d+) \|$", output, re.MULTILINE)}
    assert sum(faults.values()) >= 3, output
    # The killers: acknowledged, then each rejected for the worker's deaths, as their row
    # of the table says they must be ("rejected: worker died N times ...").
    killers = re.search(
        r'^\| killer \(must be rejected: "(worker died \d+ times while processing this ticket)"\) \| \d+ \| (\d+) \|',
        output, re.MULTILINE,
    )
    assert killers is not None, output
    reason, acknowledged_killers = killers[1], int(killers[2])
    assert acknowledged_killers >= 1, output
    end_states = {
        state: int(count)
        for state, count in re.findall(r"^killer end state: (.+) \((\d+) tickets?\)$", output, re.MULTILINE)
    }
    assert end_states == {f"rejected: {reason}": acknowledged_killers}, output
    # The worker died of them for real (of the N deaths, some may be the chaos's own
    # SIGKILL, landing while a killer was claimed alone), and never of ordinary tickets.
    deaths = re.search(r"deaths of its own \(out of memory\): (\d+)", output)
    assert deaths is not None and int(deaths[1]) >= 1, output
    assert "without a killer" not in output, output
