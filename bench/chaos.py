"""`make chaos`: faults and poison against one service, then the ledger.

For a bounded time (`--seconds`, 180 by default) one `myticket serve` takes, at once:
distinct good tickets from many clients, poison tickets (a 3 KB product_id, broken CSV,
NUL and invalid UTF-8 bytes), requests with a poison header (non-ASCII Content-Type),
1 MiB tickets, and bodies sent slowly; meanwhile PostgreSQL is stopped and started,
the worker process is killed, the spool's disk is filled and freed, and the service
itself is killed with -9 and restarted. Then every fault is undone, and the ledger is
checked against PostgreSQL: every id answered 2xx is stored once with its exact bytes
and has reached an outcome; every good ticket is processed; every poison one is
rejected. One table says what was injected and what was lost.

Everything runs on this machine: a private embedded PostgreSQL, the spool on a small
tmpfs (root only; without root the disk-full fault is left out and the table says so).
`tests/test_chaos.py` runs a short version of the same ledger check in `make test`.

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
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
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
SPOOL_DISK_BYTES = 48 * 1024 * 1024
LARGE_TICKET_BYTES = 1024 * 1024

# Kinds of request, and the outcome each must reach once acknowledged.
EXPECTED_OUTCOME = {
    "good": "processed",
    "large": "processed",
    "slow": "processed",
    "poison header": "processed",
    "poison ticket": "rejected",
    "polite": "processed",
}


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
    """A valid ticket just under 1 MiB (the default body limit): many lines, each a
    distinct product of this ticket."""
    head = f"Order: L{number}\n\nproduct,product_id,price\n"
    lines, size, index = [], len(head), 0
    while True:
        line = f"Bulk item {index},L{number}-{index},1.00\n"
        if size + len(line) > LARGE_TICKET_BYTES:
            return (head + "".join(lines)).encode()
        lines.append(line)
        size += len(line)
        index += 1


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
               slow_seconds: float = 0.0) -> tuple[int | None, bytes]:
    """One POST /ticket on its own connection; (None, b"") when the connection fails."""
    writer = None
    try:
        reader, writer = await asyncio.open_connection(host, port)
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
    """`myticket serve` as a subprocess that the chaos kills and restarts."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env, self.port, self.log_path = env, port, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "myticket", "serve"], cwd=ROOT, env=self.env, stdout=log,
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

    def worker_pid(self) -> int | None:
        """The worker process, a child of the service carrying the title `myticket: worker`."""
        if self.process is None:
            return None
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, IndexError):
                parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                if parent == self.process.pid and (stat.parent / "cmdline").read_bytes().startswith(b"myticket: worker"):
                    return int(stat.parent.name)
        return None

    def ready(self) -> dict | None:
        import json

        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=5) as response:
                return json.loads(response.read())
        return None


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


async def inject_faults(service: Service, server: EmbeddedPostgres, disk: SpoolDisk | None, ledger: Ledger,
                        stop: asyncio.Event, *, seed: int) -> None:
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
                pid = service.worker_pid()
                if pid is None:
                    continue
                os.kill(pid, signal.SIGKILL)
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
    if harmed := sum(ledger.five_hundreds[kind] for kind in ("good", "large", "slow", "polite")):
        problems.append(f"{harmed} good requests answered 5xx other than 503 (a neighbour's poison cost them)")
    for name, result in ledger.attacks.items():
        if result.share_2xx < 0.99:
            problems.append(f"under '{name}' the polite sender got {100 * result.share_2xx:.1f} % 2xx (target 99 %)")
    return problems


def check_ledger(ledger: Ledger, database_url: str) -> dict[str, Counter]:
    """Per kind: stored (exact bytes), lost, and acknowledged tickets whose outcome is wrong."""
    found: dict[str, tuple[bytes, str]] = {}
    ids = list(ledger.acked)
    conn = psycopg2.connect(database_url)
    try:
        with conn.cursor() as cur:
            for start in range(0, len(ids), 1000):
                cur.execute(QUERIES["stored_deliveries"], {"ids": ids[start:start + 1000]})
                for ticket_id, body, status in cur.fetchall():
                    found[ticket_id] = (bytes(body), status)
    finally:
        conn.close()
    stored, lost, wrong = Counter(), Counter(), Counter()
    for ticket_id, (kind, body) in ledger.acked.items():
        if ticket_id not in found or found[ticket_id][0] != body:
            lost[kind] += 1
            continue
        stored[kind] += 1
        if found[ticket_id][1] != EXPECTED_OUTCOME[kind]:
            wrong[kind] += 1
    return {"stored": stored, "lost": lost, "wrong outcome": wrong}


def table(ledger: Ledger, checked: dict[str, Counter]) -> str:
    kinds = list(EXPECTED_OUTCOME)
    rows = [
        "| request kind | sent | 2xx | other answers | 5xx (not 503) | connection errors | stored | lost | wrong outcome |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind in kinds:
        rows.append(
            f"| {kind} (must be {EXPECTED_OUTCOME[kind]}) | {ledger.sent[kind]} | {ledger.answered_2xx[kind]} | "
            f"{ledger.answered_other[kind]} | {ledger.five_hundreds[kind]} | {ledger.connection_errors[kind]} | "
            f"{checked['stored'][kind]} | {checked['lost'][kind]} | {checked['wrong outcome'][kind]} |"
        )
    rows += ["", "| fault injected | times |", "| --- | ---: |"]
    rows += [f"| {fault} | {count} |" for fault, count in ledger.faults.items()]
    rows += [f"| {fault} | left out |" for fault in ledger.faults_left_out]
    if ledger.attacks:
        rows += ["", misbehaving.table(ledger.attacks)]
    return "\n".join(rows)


async def chaos(
    seconds: float, workdir: Path, *, clients: int, seed: int, attack_seconds: float = 0.0
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
    }
    service = Service(env, port, workdir / "service.log")
    settled = False
    try:
        await asyncio.to_thread(service.start)
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
        tasks = [asyncio.create_task(sender) for sender in senders]
        faults = asyncio.create_task(inject_faults(service, server, disk, ledger, stop, seed=seed))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(faults), timeout=seconds)
        stop.set()
        await faults
        await asyncio.gather(*tasks)
        # Undo every fault: PostgreSQL up, disk free, a service running.
        if disk is not None:
            disk.free()
        if not server.is_running():
            await asyncio.to_thread(server.start)
        if service.process is None or service.process.poll() is not None:
            await asyncio.to_thread(service.start)
        settled = await asyncio.to_thread(wait_until_settled, service, database_url, 300)
        checked = await asyncio.to_thread(check_ledger, ledger, database_url)
    finally:
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
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="myticket-chaos-"))
    try:
        ledger, checked, settled = asyncio.run(
            chaos(args.seconds, workdir, clients=args.clients, seed=args.seed, attack_seconds=args.attack_seconds)
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
