"""Misbehaving senders against a running service, and what a polite sender sees meanwhile.

Each attack runs in a process of its own (its own event loop and core time, as a real
attacker on this machine), from its own source address (127.0.0.3), while a polite
sender posts distinct tickets at c=5 from 127.0.0.2, one connection per request. For
each attack: the polite sender's share of 2xx, its p99, and the service's peak RSS.
`make chaos` runs them before its faults; `python bench/senders.py --port P` runs them
against a service already running.

The attacks:
- slow senders: 300 connections that declare Content-Length 1 MiB, then send nothing
  (or trickle a byte a second), reconnecting whenever they are closed;
- greedy sender: c=100 posting 200 KB bodies non-stop;
- header flood: 600 connections, each sending 100 headers of 8 KB and holding;
- idle connections: 1,500 connections that send nothing at all.
Worker-killing tickets are not an attack on the HTTP process: bench/chaos.py sends them
from 127.0.0.4 (send_killers), against a worker under an address-space limit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import make_tickets  # noqa: E402

POLITE_ADDRESS = "127.0.0.2"
ATTACKER_ADDRESS = "127.0.0.3"
POLITE_CONCURRENCY = 5


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _hold(port: int, head: bytes, *, trickle: bool = False) -> None:
    """One connection that sends `head` and holds it open; reconnects when closed."""
    while True:
        writer = None
        try:
            reader, writer = await _connect(port, ATTACKER_ADDRESS)
            writer.write(head)
            await writer.drain()
            while not reader.at_eof():
                if trickle:
                    writer.write(b"x")
                    await writer.drain()
                # The attacker's pace: a byte a second, or nothing; the read notices a close.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(reader.read(65536), timeout=1.0)
        except OSError:
            await asyncio.sleep(0.05)  # refused or reset: reconnect, as an attacker would
        finally:
            if writer is not None:
                writer.close()


async def slow_senders(port: int) -> None:
    head = b"POST /ticket HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n"
    await asyncio.gather(*(_hold(port, head, trickle=number % 2 == 1) for number in range(300)))


async def greedy_sender(port: int) -> None:
    body = b"Order: G\n\nproduct,product_id,price\n" + b"Greedy item,G1,1.00\n" * (200_000 // 20)
    request = (b"POST /ticket HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"
               % len(body)) + body

    async def one_client() -> None:
        while True:
            writer = None
            try:
                reader, writer = await _connect(port, ATTACKER_ADDRESS)
                while True:
                    writer.write(request)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
                    await reader.readexactly(length)
                    if b"connection: close" in head.lower():
                        break
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                await asyncio.sleep(0.01)  # refused: retry at once, as a greedy sender would
            finally:
                if writer is not None:
                    writer.close()

    await asyncio.gather(*(one_client() for _ in range(100)))


async def header_flood(port: int) -> None:
    headers = b"".join(b"X-Flood-%d: %s\r\n" % (number, b"f" * 8000) for number in range(100))
    head = b"POST /ticket HTTP/1.1\r\nHost: a\r\n" + headers  # never ends the head
    await asyncio.gather(*(_hold(port, head) for _ in range(600)))


async def idle_connections(port: int) -> None:
    await asyncio.gather(*(_hold(port, b"") for _ in range(1500)))


async def no_attack(port: int) -> None:
    await asyncio.Event().wait()


ATTACKS: dict[str, Callable[[int], Awaitable[None]]] = {
    "none (baseline)": no_attack,
    "slow senders": slow_senders,
    "greedy sender": greedy_sender,
    "header flood": header_flood,
    "idle connections": idle_connections,
}


def _run_attack(name: str, port: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(ATTACKS[name](port))


@dataclass
class PoliteResult:
    statuses: list[int | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    acked: dict[str, bytes] = field(default_factory=dict)
    peak_rss_bytes: int = 0

    @property
    def share_2xx(self) -> float:
        return sum(1 for s in self.statuses if s is not None and 200 <= s < 300) / max(1, len(self.statuses))

    @property
    def p99_seconds(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


async def _polite(port: int, bodies: list[bytes], result: PoliteResult, stop: asyncio.Event) -> None:
    async def one_client(mine: list[bytes]) -> None:
        for body in mine:
            if stop.is_set():
                return
            started = time.perf_counter()
            status, answer = None, b""
            writer = None
            try:
                reader, writer = await _connect(port, POLITE_ADDRESS)
                writer.write(b"POST /ticket HTTP/1.1\r\nHost: p\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n" % len(body) + body)
                await writer.drain()
                response = await asyncio.wait_for(reader.read(), timeout=60)
                status = int(response.split(b" ", 2)[1])
                answer = response.split(b"\r\n\r\n", 1)[1]
            except (OSError, asyncio.TimeoutError, ValueError, IndexError):
                pass
            finally:
                if writer is not None:
                    writer.close()
            result.seconds.append(time.perf_counter() - started)
            result.statuses.append(status)
            if status is not None and 200 <= status < 300:
                result.acked[answer.split(b'"id": "', 1)[1].split(b'"', 1)[0].decode()] = body

    await asyncio.gather(*(one_client(bodies[index::POLITE_CONCURRENCY]) for index in range(POLITE_CONCURRENCY)))


def status_bytes(pid: int, field: str) -> int:
    """A size of /proc/<pid>/status (VmRSS, VmPeak, ...) in bytes; 0 when the process is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


async def measure(name: str, port: int, service_pid: int | None, seconds: float, *, seed: int,
                  warm_up: float = 3.0) -> PoliteResult:
    """Run attack `name` in its own process for `warm_up` + `seconds`, the polite sender
    during the last `seconds`; the service's RSS sampled throughout."""
    attacker = multiprocessing.get_context("spawn").Process(target=_run_attack, args=(name, port), daemon=True)
    attacker.start()
    result = PoliteResult()
    stop = asyncio.Event()

    async def sample_rss() -> None:
        while not stop.is_set():
            if service_pid is not None:
                result.peak_rss_bytes = max(result.peak_rss_bytes, status_bytes(service_pid, "VmRSS"))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.2)  # the sampling period

    sampler = asyncio.create_task(sample_rss())
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=warm_up)  # the attack takes hold first
        polite = asyncio.create_task(_polite(port, make_tickets(int(seconds * 3000), seed=seed, malformed_ratio=0.0), result, stop))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(polite), timeout=seconds)
        stop.set()
        await polite
    finally:
        stop.set()
        await sampler
        attacker.terminate()
        attacker.join(10)
    return result


def table(results: dict[str, PoliteResult]) -> str:
    rows = [
        f"| attack (polite sender at c={POLITE_CONCURRENCY} from {POLITE_ADDRESS}) | polite requests | polite 2xx | "
        "polite p99 | service peak RSS |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        rows.append(
            f"| {name} | {len(result.statuses)} | {100 * result.share_2xx:.2f} % | "
            f"{1000 * result.p99_seconds:.0f} ms | {result.peak_rss_bytes / 2**20:.0f} MB |"
        )
    return "\n".join(rows)


async def run_all(port: int, service_pid: int | None, seconds: float, *, seed: int) -> dict[str, PoliteResult]:
    results = {}
    for number, name in enumerate(ATTACKS):
        results[name] = await measure(name, port, service_pid, seconds, seed=seed * 100 + number)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pid", type=int, help="the service's HTTP process, for its RSS")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--only", help="one attack by name")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    if args.only:
        results = {args.only: asyncio.run(measure(args.only, args.port, args.pid, args.seconds, seed=args.seed))}
    else:
        results = asyncio.run(run_all(args.port, args.pid, args.seconds, seed=args.seed))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
