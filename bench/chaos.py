"""`make chaos`: faults and poison against one service, then the ledger.

For a bounded time (`--seconds`, 180 by default) one `myticket serve --no-worker`, with
a standalone `myticket worker` beside it, takes at once: distinct good tickets from many
clients, poison tickets (a 3 KB product_id, broken CSV, NUL and invalid UTF-8 bytes),
requests with a poison header (non-ASCII Content-Type), 1 MiB tickets, bodies sent
slowly, and now and then (`--killer-every`) a ticket whose processing kills the worker
(out of its address-space limit, see Worker); meanwhile PostgreSQL is stopped and
started, the worker process is killed, the spool's disk is filled and freed, and the
service itself is killed with -9 and restarted. The worker is started again whenever it
exits, as its supervisor would. Then every fault is undone, and the ledger is checked
against PostgreSQL: every id answered 2xx is stored once with its exact bytes and has
reached an outcome; every good ticket is processed; every poison one is rejected; every
killer is rejected with "worker died N times while processing this ticket". One table
says what was injected and what was lost.

Everything runs on this machine: a private embedded PostgreSQL, the spool on a small
tmpfs (root only; without root the disk-full fault is left out and the table says so).
`tests/processes/test_chaos.py` runs a short version of the same ledger check in `make test`.

Before the faults, misbehaving senders (bench/senders.py: slow senders, a greedy sender,
a header flood, idle connections), one at a time, each from its own address and process,
while a polite sender posts from another address: a second table gives, per attack, the
polite sender's share of 2xx and p99, and the service's peak RSS (`--attack-seconds`).
The polite sender's acknowledged tickets join the ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import senders as misbehaving  # noqa: E402
from bench.loadgen import make_tickets  # noqa: E402
from myticket.db.embedded import EmbeddedPostgres  # noqa: E402
from myticket.db.resources import named_queries  # noqa: E402

QUERIES = named_queries(ROOT / "bench" / "sql")
MIB = 1024 * 1024
SPOOL_DISK_BYTES = 48 * MIB
LARGE_TICKET_BYTES = MIB
# A large ticket's product names: long (470 characters, under the parser's 500), so that
# 1 MiB holds some 2,200 lines: processing one takes the worker about 20 MiB of address
# space, where a killer's 50,000 lines take about 110 MiB.
LARGE_TICKET_NAME = ("Bulk item of a long catalogue name " * 14)[:470]
# Deaths before a ticket that kills the worker is rejected (MYTICKET_WORKER_MAX_ATTEMPTS).
WORKER_MAX_DEATHS = 3
KILLER_REASON = f"worker died {WORKER_MAX_DEATHS} times while processing this ticket"
KILLER_ADDRESS = "127.0.0.4"
# The most product lines the parser accepts (myticket.core.parser.MAX_PRODUCT_LINES).
KILLER_LINES = 50_000
# The worker's address-space limit: its VmPeak after small tickets, plus this. Measured
# (docs/explanation/chaos.md): 90 s of ordinary chaos load, large tickets included, took
# the worker at most 57 MiB above that peak; one killer, 109 MiB. Halfway, or nearly.
WORKER_HEADROOM = 85 * MIB
# The supervisor's pause before starting a worker that exited (systemd's RestartSec).
WORKER_RESTART_SECONDS = 1.0

# Kinds of request, and the outcome each must reach once acknowledged.
EXPECTED_OUTCOME = {
    "good": "processed",
    "large": "processed",
    "slow": "processed",
    "poison header": "processed",
    "poison ticket": "rejected",
    "polite": "processed",
    "killer": "rejected",
}
# The reason an acknowledged ticket of a kind must be rejected with, when it has one.
EXPECTED_REASON = {"killer": KILLER_REASON}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def poison_tickets(number: int) -> list[bytes]:
    """Bodies the parser or PostgreSQL must refuse, each distinct (`number` in it). The
    3 KB product_id is random, so that PostgreSQL cannot compress it under its index limit."""
    rng = random.Random(number)
    long_id = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") for _ in range(3000))
    return [
        f"Order: P{number}\n\nproduct,product_id,price\nLong,{long_id},1.00\n".encode(),
        f"Order: P{number}\n\nproduct,product_id,price\n\"unterminated,X{number},1.00\n".encode(),
        f"Order: P{number}\n\nproduct,product_id,price\nNul\x00,N{number},1.00\n".encode() + b"\xff\xfe",
    ]


def large_ticket(number: int) -> bytes:
    """A valid ticket just under 1 MiB (the default body limit): some 2,200 lines with
    long names, each a distinct product of this ticket. Few lines for its size: the
    memory that parsing takes grows with the lines, and a killer must take far more."""
    head = f"Order: L{number}\n\nproduct,product_id,price\n"
    lines, size, index = [], len(head), 0
    while True:
        line = f"{LARGE_TICKET_NAME}{index},L{number}-{index},1.00\n"
        if size + len(line) > LARGE_TICKET_BYTES:
            return (head + "".join(lines)).encode()
        lines.append(line)
        size += len(line)
        index += 1


def killer_ticket(number: int) -> bytes:
    """A valid ticket of 50,000 distinct products in short lines (about 740 KB): processing
    it takes more address space than the worker's limit leaves (see Worker)."""
    rows = "".join(f"{index:x},k{number}.{index:x},1\n" for index in range(KILLER_LINES))
    return f"Order: K{number}\n\nproduct,product_id,price\n{rows}".encode()


@dataclass
class Ledger:
    """Every request sent, by kind: its answers, and the body of each acknowledged id."""

    acked: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (kind, body)
    sent: Counter = field(default_factory=Counter)
    answered_2xx: Counter = field(default_factory=Counter)
    answered_other: Counter = field(default_factory=Counter)
    five_hundreds: Counter = field(default_factory=Counter)
    connection_errors: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)
    faults_left_out: list[str] = field(default_factory=list)
    attacks: dict[str, misbehaving.PoliteResult] = field(default_factory=dict)
    worker: str = ""  # the worker's limit, peaks and deaths (Worker.summary)
    worker_deaths_without_killer: int = 0

    def record_attack(self, name: str, result: misbehaving.PoliteResult) -> None:
        """The polite sender's requests under attack `name`: its acknowledged tickets must be stored."""
        self.attacks[name] = result
        self.sent["polite"] += len(result.statuses)
        for status in result.statuses:
            if status is None:
                self.connection_errors["polite"] += 1
            elif 200 <= status < 300:
                self.answered_2xx["polite"] += 1
            else:
                self.answered_other["polite"] += 1
                if status >= 500 and status != 503:
                    self.five_hundreds["polite"] += 1
        for ticket_id, body in result.acked.items():
            self.acked[ticket_id] = ("polite", body)

    def record(self, kind: str, body: bytes, status: int | None, answer: bytes) -> None:
        self.sent[kind] += 1
        if status is None:
            self.connection_errors[kind] += 1
        elif 200 <= status < 300:
            self.answered_2xx[kind] += 1
            ticket_id = answer.split(b'"id": "', 1)[1].split(b'"', 1)[0].decode()
            self.acked[ticket_id] = (kind, body)
        else:
            self.answered_other[kind] += 1
            if status >= 500 and status != 503:
                self.five_hundreds[kind] += 1


async def post(host: str, port: int, body: bytes, *, content_type: bytes = b"text/plain",
               slow_seconds: float = 0.0, source: str | None = None) -> tuple[int | None, bytes]:
    """One POST /ticket on its own connection, from address `source` if given; (None, b"")
    when the connection fails."""
    writer = None
    try:
        local_addr = (source, 0) if source is not None else None
        reader, writer = await asyncio.open_connection(host, port, local_addr=local_addr)
        head = (b"POST /ticket HTTP/1.1\r\nHost: chaos\r\nContent-Type: " + content_type +
                b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
        if slow_seconds:
            writer.write(head)
            pieces = 10
            step = max(1, len(body) // pieces)
            for offset in range(0, len(body), step):
                writer.write(body[offset:offset + step])
                await writer.drain()
                await asyncio.sleep(slow_seconds / pieces)  # the slowness is the point of this request
        else:
            writer.write(head + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=60)
        status = int(response.split(b" ", 2)[1])
        return status, response.split(b"\r\n\r\n", 1)[1]
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
        return None, b""
    finally:
        if writer is not None:
            writer.close()


class Service:
    """`myticket serve --no-worker` as a subprocess that the chaos kills and restarts
    (the worker is a process of its own: Worker)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env, self.port, self.log_path = env, port, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "myticket", "serve", "--no-worker"], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ping", timeout=2):
                    return
            time.sleep(0.1)  # polls a process that is starting
        raise RuntimeError("the service did not answer /ping within 60 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def ready(self) -> dict | None:
        import json

        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=5) as response:
                return json.loads(response.read())
        return None


class Worker:
    """The standalone `myticket worker` under an address-space limit (RLIMIT_AS), which a
    killer ticket exceeds and ordinary tickets do not, started again whenever it exits:
    here chaos plays the worker's supervisor, as systemd (`Restart=always`) or Kubernetes
    (`restartPolicy: Always`) would. Nobody touches the database: the worker itself
    rejects a ticket that killed it WORKER_MAX_DEATHS times.

    The limit is the worker's VmPeak after `calibrate` (small tickets, no limit) plus
    `headroom`; MALLOC_ARENA_MAX=1 keeps the address space that a given amount of work
    takes steady."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**env, "MALLOC_ARENA_MAX": "1"}
        self.database_url = env["DATABASE_URL"]
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.address_space: int | None = None  # RLIMIT_AS; None until calibrated
        self.calibrated_peak = 0
        # The VmPeak of each limited worker that did not die of its own (killed by the
        # chaos, or stopped at the end): what ordinary load took under the limit, unless
        # the chaos killed it while it was processing a killer.
        self.survivors_peaks: list[int] = []
        self._current_peak = 0
        self.starts = 0
        # Exits of its own (not the chaos's SIGKILL) while processing, by how: "MemoryError"
        # (it says so in its log) or "signal N" (a C extension's failed allocation can end
        # in SIGSEGV); and the other exits, by exit code (none expected: one started while
        # PostgreSQL is down waits for it).
        self.deaths: Counter = Counter()
        self.failed_starts: Counter = Counter()
        # Deaths of its own by what its dead claims held: "with a killer", "without a
        # killer" (ordinary load went past the limit: the verdict fails), "unknown"
        # (PostgreSQL down when asked).
        self.deaths_by_claims: Counter = Counter()
        self._dead_claims_seen: set[str] = set()
        self._log_offset = 0
        self.killed_by_chaos = 0
        self._killed_pid: int | None = None
        self._exited_at: float | None = None
        self._died_of_its_own = False

    def start(self) -> None:
        address_space = self.address_space

        def limit_memory() -> None:
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "myticket", "worker"], cwd=ROOT, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=limit_memory,
            )
        self.starts += 1
        self._current_peak = 0
        self._exited_at = None

    def sample(self) -> None:
        if (pid := self.pid()) is not None:
            self._current_peak = max(self._current_peak, misbehaving.status_bytes(pid, "VmPeak"))

    async def calibrate(self, headroom: int, warm_up: Callable[[], Awaitable[None]]) -> None:
        """Run the worker without a limit through `warm_up` (ordinary tickets, awaited
        until processed), then start it again limited to its VmPeak plus `headroom`."""
        self.start()
        await warm_up()
        assert self.process is not None and self.process.poll() is None, f"the worker exited; see {self.log_path}"
        self.calibrated_peak = misbehaving.status_bytes(self.process.pid, "VmPeak")
        self.stop()
        self.address_space = self.calibrated_peak + headroom
        self.start()

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def kill(self) -> bool:
        """The chaos's "worker killed" fault: SIGKILL, not counted as a death of its own."""
        pid = self.pid()
        if pid is None:
            return False
        self._killed_pid = pid
        os.kill(pid, signal.SIGKILL)
        return True

    def restart_if_dead(self) -> None:
        """Start it again WORKER_RESTART_SECONDS after it exited: its supervisor's one job."""
        if self.process is None or self.process.poll() is None:
            return
        if self._exited_at is None:
            self._exited_at = time.monotonic()
            self._died_of_its_own = False
            if self.process.pid == self._killed_pid:
                self.killed_by_chaos += 1
                self.survivors_peaks.append(self._current_peak)
            elif self._said_out_of_memory():
                self.deaths["MemoryError"] += 1
                self._died_of_its_own = True
            elif self.process.returncode < 0:
                self.deaths[f"signal {-self.process.returncode}"] += 1
                self._died_of_its_own = True
            else:
                self.failed_starts[self.process.returncode] += 1
        if time.monotonic() - self._exited_at >= WORKER_RESTART_SECONDS:
            # A second after the exit, PostgreSQL has ended the dead claims' transactions,
            # and no worker has claimed their tickets again yet.
            had_killer = self._new_dead_claims_had_killer()
            if self._died_of_its_own:
                what = {True: "with a killer", False: "without a killer", None: "unknown"}[had_killer]
                self.deaths_by_claims[what] += 1
            self.start()

    def _new_dead_claims_had_killer(self) -> bool | None:
        """Whether the dead claims not seen before held a killer; None when PostgreSQL
        cannot say."""
        try:
            conn = psycopg2.connect(self.database_url, connect_timeout=2)
        except psycopg2.Error:
            return None
        try:
            with conn.cursor() as cur:
                cur.execute(QUERIES["dead_claims"])
                claims = {xact_id: most_lines for xact_id, most_lines in cur.fetchall()}
        except psycopg2.Error:
            return None
        finally:
            conn.close()
        new = {xact_id: most_lines for xact_id, most_lines in claims.items() if xact_id not in self._dead_claims_seen}
        self._dead_claims_seen.update(new)
        return any(most_lines >= KILLER_LINES for most_lines in new.values())

    def _said_out_of_memory(self) -> bool:
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            return b"worker out of memory" in log.read()

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart the worker whenever it exits, until `stop`."""
        while not stop.is_set():
            self.sample()
            self.restart_if_dead()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.1)  # polls the worker's exit and VmPeak

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.sample()
            if self.address_space is not None:
                self.survivors_peaks.append(self._current_peak)
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def summary(self) -> str:
        if self.address_space is None:
            return "worker: not calibrated"
        deaths = ", ".join(f"{how}: {count}" for how, count in (self.deaths + self.deaths_by_claims).items())
        return (
            f"worker: RLIMIT_AS {self.address_space / MIB:.0f} MiB (VmPeak {self.calibrated_peak / MIB:.0f} MiB "
            f"after small tickets, plus {(self.address_space - self.calibrated_peak) / MIB:.0f} MiB); "
            f"VmPeak of the workers that did not die of their own: "
            f"{', '.join(f'{peak / MIB:.0f} MiB' for peak in sorted(self.survivors_peaks)) or 'none'}; "
            f"deaths of its own (out of memory): {sum(self.deaths.values())} ({deaths}); "
            f"other exits: {sum(self.failed_starts.values())} (exit codes {dict(self.failed_starts)}); "
            f"killed by the chaos: {self.killed_by_chaos}; started {self.starts} times"
        )


class SpoolDisk:
    """A small tmpfs for the spool, which the chaos fills and frees (root only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def mount(self) -> bool:
        self.path.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={SPOOL_DISK_BYTES}", "tmpfs", str(self.path)],
            capture_output=True,
        )
        self.mounted = result.returncode == 0
        return self.mounted

    def fill(self) -> None:
        with contextlib.suppress(OSError), (self.path / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * (1024 * 1024))
                filler.flush()

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


async def send_load(kind: str, bodies, ledger: Ledger, port: int, stop: asyncio.Event, *,
                    pause: float = 0.0, **options) -> None:
    """Send each body of `bodies` as `kind` until they run out or `stop` is set."""
    for body in bodies:
        if stop.is_set():
            return
        status, answer = await post("127.0.0.1", port, body, **options)
        ledger.record(kind, body, status, answer)
        if status is None:
            await asyncio.sleep(0.1)  # the service is down (killed or restarting): do not spin
        elif pause:
            await asyncio.sleep(pause)  # paces this sender against the others


async def send_killers(ledger: Ledger, port: int, stop: asyncio.Event, *, every: float) -> None:
    """One killer ticket every `every` seconds from KILLER_ADDRESS, the first at once; one
    that is not acknowledged (the service down, 503) is sent again a second later."""
    number = 0
    while not stop.is_set():
        body = killer_ticket(number)
        number += 1
        status, answer = await post("127.0.0.1", port, body, source=KILLER_ADDRESS)
        ledger.record("killer", body, status, answer)
        acknowledged = status is not None and 200 <= status < 300
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every if acknowledged else 1.0)  # the killers' pace


async def inject_faults(service: Service, worker: Worker, server: EmbeddedPostgres, disk: SpoolDisk | None,
                        ledger: Ledger, stop: asyncio.Event, *, seed: int) -> None:
    """Cycle through the faults, each undone before the next, until `stop` is set."""
    rng = random.Random(seed)

    async def pause(low: float, high: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(low, high))

    faults = ["postgres stopped", "worker killed", "spool disk full", "service killed -9"]
    while not stop.is_set():
        for fault in faults:
            await pause(2, 4)
            if stop.is_set():
                return
            if fault == "postgres stopped":
                await asyncio.to_thread(server.stop, "immediate")
                await pause(2, 4)
                await asyncio.to_thread(server.start)
            elif fault == "worker killed":
                # A worker that just died of a killer is started again within a second:
                # wait for it, so that this fault is not skipped for the whole cycle.
                while not worker.kill():
                    await pause(0.2, 0.5)
                    if stop.is_set():
                        return
            elif fault == "spool disk full":
                if disk is None:
                    continue
                await asyncio.to_thread(server.stop, "immediate")  # so that tickets go to the spool
                await asyncio.to_thread(disk.fill)
                await pause(1, 2)
                await asyncio.to_thread(disk.free)
                await pause(1, 2)
                await asyncio.to_thread(server.start)
            elif fault == "service killed -9":
                service.kill()
                await asyncio.to_thread(service.start)
            ledger.faults[fault] += 1


def wait_until_settled(service: Service, database_url: str, timeout: float) -> bool:
    """Spool replayed and no ticket pending, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = service.ready()
        if state is not None and state.get("status") == "ready" and (state.get("spool") or {}).get("tickets", 0) == 0:
            with contextlib.suppress(psycopg2.Error):
                conn = psycopg2.connect(database_url)
                try:
                    with conn.cursor() as cur:
                        cur.execute(QUERIES["any_pending"])
                        if not cur.fetchone()[0]:
                            return True
                finally:
                    conn.close()
        time.sleep(0.5)  # polls the service and the database from outside
    return False


def verdict(ledger: Ledger, checked: dict[str, Counter], settled: bool) -> list[str]:
    """What went wrong, one line each; empty when the run kept every promise."""
    problems = []
    if not settled:
        problems.append("the service did not settle (spool replayed, nothing pending) within 300 s")
    if lost := sum(checked["lost"].values()):
        problems.append(f"{lost} acknowledged tickets lost or altered")
    if wrong := sum(checked["wrong outcome"].values()):
        problems.append(f"{wrong} acknowledged tickets with the wrong outcome")
    if ledger.worker_deaths_without_killer:
        problems.append(f"the worker died {ledger.worker_deaths_without_killer} times with no killer in its claims: "
                        "ordinary load went past its address-space limit")
    if ledger.sent["killer"] and not ledger.answered_2xx["killer"]:
        problems.append("no killer ticket was acknowledged: the run shows nothing of them")
    if harmed := sum(ledger.five_hundreds[kind] for kind in ("good", "large", "slow", "polite")):
        problems.append(f"{harmed} good requests answered 5xx other than 503 (a neighbour's poison cost them)")
    for name, result in ledger.attacks.items():
        if result.share_2xx < 0.99:
            problems.append(f"under '{name}' the polite sender got {100 * result.share_2xx:.1f} % 2xx (target 99 %)")
    return problems


def check_ledger(ledger: Ledger, database_url: str) -> dict[str, Counter]:
    """Per kind: stored (exact bytes), lost, and acknowledged tickets whose outcome is
    wrong; and the end states ("status: reason") of the acknowledged killers."""
    found: dict[str, tuple[bytes, str, str | None]] = {}
    ids = list(ledger.acked)
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            for start in range(0, len(ids), 1000):
                cur.execute(QUERIES["stored_deliveries"], {"ids": ids[start:start + 1000]})
                for ticket_id, body, status, error in cur.fetchall():
                    found[ticket_id] = (bytes(body), status, error)
    finally:
        conn.close()
    stored, lost, wrong, killers = Counter(), Counter(), Counter(), Counter()
    for ticket_id, (kind, body) in ledger.acked.items():
        if ticket_id not in found or found[ticket_id][0] != body:
            lost[kind] += 1
            continue
        stored[kind] += 1
        _, status, error = found[ticket_id]
        if kind == "killer":
            killers[f"{status}: {error}" if error else status] += 1
        if status != EXPECTED_OUTCOME[kind] or (kind in EXPECTED_REASON and error != EXPECTED_REASON[kind]):
            wrong[kind] += 1
    return {"stored": stored, "lost": lost, "wrong outcome": wrong, "killer end states": killers}


def table(ledger: Ledger, checked: dict[str, Counter]) -> str:
    kinds = list(EXPECTED_OUTCOME)
    rows = [
        "| request kind | sent | 2xx | other answers | 5xx (not 503) | connection errors | stored | lost | wrong outcome |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        must = EXPECTED_OUTCOME[kind] + (f': "{EXPECTED_REASON[kind]}"' if kind in EXPECTED_REASON else "")
        rows.append(
            f"| {kind} (must be {must}) | {ledger.sent[kind]} | {ledger.answered_2xx[kind]} | "
            f"{ledger.answered_other[kind]} | {ledger.five_hundreds[kind]} | {ledger.connection_errors[kind]} | "
            f"{checked['stored'][kind]} | {checked['lost'][kind]} | {checked['wrong outcome'][kind]} |"
        )
    rows += ["", "| fault injected | times |", "| --- | ---: |"]
    rows += [f"| {fault} | {count} |" for fault, count in ledger.faults.items()]
    rows += [f"| {fault} | left out |" for fault in ledger.faults_left_out]
    rows += [""] + [
        f"killer end state: {state} ({count} {'ticket' if count == 1 else 'tickets'})"
        for state, count in checked["killer end states"].items()
    ]
    if ledger.worker:
        rows += [ledger.worker]
    if ledger.attacks:
        rows += ["", misbehaving.table(ledger.attacks)]
    return "\n".join(rows)


async def chaos(
    seconds: float, workdir: Path, *, clients: int, seed: int, attack_seconds: float = 0.0, killer_every: float = 45.0
) -> tuple[Ledger, dict[str, Counter], bool]:
    server = EmbeddedPostgres(workdir / "pgdata")
    database_url = server.start()
    disk = SpoolDisk(workdir / "spool")
    ledger = Ledger()
    if not disk.mount():
        disk = None
        ledger.faults_left_out.append("spool disk full (needs root to mount a tmpfs)")
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": database_url, "HTTP_HOST": "127.0.0.1", "HTTP_PORT": str(port),
        "MYTICKET_DATA_DIR": str(workdir / "data"), "MYTICKET_SPOOL_DIR": str(workdir / "spool"),
        "MYTICKET_SPOOL_MAX_BYTES": str(10 * SPOOL_DISK_BYTES), "LOG_LEVEL": "WARNING",
        "MYTICKET_WORKER_MAX_ATTEMPTS": str(WORKER_MAX_DEATHS),
    }
    service = Service(env, port, workdir / "service.log")
    worker = Worker(env, workdir / "worker.log")
    supervisor_stop = asyncio.Event()
    supervisor = None
    settled = False

    async def warm_up() -> None:
        for body in make_tickets(20, seed=seed + 1000, malformed_ratio=0.0):
            ledger.record("good", body, *await post("127.0.0.1", port, body))
        if not await asyncio.to_thread(wait_until_settled, service, database_url, 120):
            raise RuntimeError(f"the worker did not process the warm-up tickets; see {worker.log_path}")

    try:
        await asyncio.to_thread(service.start)
        await worker.calibrate(WORKER_HEADROOM, warm_up)
        supervisor = asyncio.create_task(worker.supervise(supervisor_stop))
        if attack_seconds > 0:
            for number, name in enumerate(misbehaving.ATTACKS):
                assert service.process is not None
                result = await misbehaving.measure(
                    name, port, service.process.pid, attack_seconds, seed=seed * 100 + number
                )
                ledger.record_attack(name, result)
        stop = asyncio.Event()
        good = make_tickets(int(min(200_000, seconds * 1500)), seed=seed, malformed_ratio=0.0)
        per_client = [good[index::clients] for index in range(clients)]
        senders = [send_load("good", bodies, ledger, port, stop) for bodies in per_client]
        senders.append(send_load(
            "poison ticket", (body for n in range(10**6) for body in poison_tickets(n)), ledger, port, stop, pause=0.1,
        ))
        senders.append(send_load(
            "poison header", (f"Order: H{n}\n\nproduct,product_id,price\nH,H{n},1.00\n".encode() for n in range(10**6)),
            ledger, port, stop, pause=0.2, content_type=b"\xff\xfe text",
        ))
        senders.append(send_load("large", (large_ticket(n) for n in range(10**6)), ledger, port, stop, pause=1.0))
        senders.append(send_load(
            "slow", (f"Order: S{n}\n\nproduct,product_id,price\nS,S{n},1.00\n".encode() for n in range(10**6)),
            ledger, port, stop, slow_seconds=1.5,
        ))
        if killer_every > 0:
            senders.append(send_killers(ledger, port, stop, every=killer_every))
        tasks = [asyncio.create_task(sender) for sender in senders]
        faults = asyncio.create_task(inject_faults(service, worker, server, disk, ledger, stop, seed=seed))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(faults), timeout=seconds)
        stop.set()
        await faults
        await asyncio.gather(*tasks)
        # Undo every fault: PostgreSQL up, disk free, a service running (the worker's
        # supervisor keeps one running).
        if disk is not None:
            disk.free()
        if not server.is_running():
            await asyncio.to_thread(server.start)
        if service.process is None or service.process.poll() is not None:
            await asyncio.to_thread(service.start)
        settled = await asyncio.to_thread(wait_until_settled, service, database_url, 300)
        checked = await asyncio.to_thread(check_ledger, ledger, database_url)
    finally:
        supervisor_stop.set()
        if supervisor is not None:
            await supervisor
        worker.stop()
        ledger.worker = worker.summary()
        ledger.worker_deaths_without_killer = worker.deaths_by_claims["without a killer"]
        service.stop()
        if disk is not None:
            disk.unmount()
        if server.is_running():
            server.stop()
    return ledger, checked, settled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="how long faults are injected (default 180)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients sending good tickets")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--attack-seconds", type=float, default=20,
                        help="how long the polite sender is measured under each attack, before the faults (0: none)")
    parser.add_argument("--killer-every", type=float, default=45,
                        help="seconds between two worker-killing tickets, the first at the start of the faults "
                             "(default 45; 0: none, to measure the worker under ordinary load alone)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="myticket-chaos-"))
    try:
        ledger, checked, settled = asyncio.run(
            chaos(args.seconds, workdir, clients=args.clients, seed=args.seed, attack_seconds=args.attack_seconds,
                  killer_every=args.killer_every)
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(table(ledger, checked))
    problems = verdict(ledger, checked, settled)
    print(f"\n{len(ledger.acked)} tickets acknowledged; lost: {sum(checked['lost'].values())}")
    for problem in problems:
        print(f"FAILED: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
