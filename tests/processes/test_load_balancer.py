"""Several instances behind a real load balancer: the shipped HAProxy configuration in
front of two `myticket serve --no-worker` instances and one `myticket worker`, on one
database. One instance is killed -9 mid-burst: every ticket answered 2xx is stored, and
the other instance keeps serving."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
from pathlib import Path

import aiohttp


from ..load import SendResult, make_tickets, send_tickets
from ..paths import PROJECT_ROOT
from ..service_process import Service, free_port
from ..waiting import wait_until

HAPROXY_CONFIG = PROJECT_ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"  # make test installs Debian's haproxy (.ci/debian-tools)


def test_the_shipped_haproxy_configuration_is_valid():
    result = subprocess.run([HAPROXY, "-c", "-f", str(HAPROXY_CONFIG)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    config = HAPROXY_CONFIG.read_text()
    for directive in ("option httpchk", "http-check send meth GET uri /ready", "http-check expect status 200",
                      "retry-on conn-failure empty-response", "timeout http-request", "maxconn"):
        assert directive in config


def rendered_config(listen_port: int, instances: list[Service]) -> str:
    """The shipped file with its listening address and its servers replaced."""
    config = HAPROXY_CONFIG.read_text()
    config, binds = re.subn(r"(?m)^(\s*bind)\s+\S+", rf"\1 127.0.0.1:{listen_port}", config)
    servers = "".join(f"    server myticket{number} 127.0.0.1:{instance.port} check\n"
                      for number, instance in enumerate(instances, start=1))
    config, server_lines = re.subn(r"(?m)^\s*server .*\n", "", config)
    assert (binds, server_lines) == (1, 2)
    return config.rstrip("\n") + "\n" + servers


async def status_through(port: int) -> int | None:
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/ready", timeout=aiohttp.ClientTimeout(total=5)) as answer:
                return answer.status
    except aiohttp.ClientError:
        return None


async def test_one_instance_killed_mid_burst_behind_haproxy_loses_no_acknowledged_ticket(own_server, own_db, tmp_path):
    instances = [Service(own_server.url, tmp_path / f"instance{n}", serve_args=("--no-worker",)) for n in (1, 2)]
    listen_port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(rendered_config(listen_port, instances))
    processes: list[subprocess.Popen] = []
    try:
        for instance in instances:
            await instance.start()
        with (tmp_path / "worker.log").open("ab") as log:
            processes.append(subprocess.Popen(instances[0].command("worker"), cwd=PROJECT_ROOT,
                                              env=instances[0].env, stdout=log, stderr=subprocess.STDOUT))
        with (tmp_path / "haproxy.log").open("ab") as log:
            processes.append(subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdout=log,
                                              stderr=subprocess.STDOUT))

        async def balanced() -> bool:
            return await status_through(listen_port) == 200

        await wait_until(balanced, timeout=30, what="HAProxy to answer /ready")

        bodies = make_tickets(4000, seed=1950)
        result = SendResult()
        sending = asyncio.create_task(send_tickets("127.0.0.1", listen_port, bodies, concurrency=32,
                                                   deadline_seconds=90, result=result))

        async def acked(count: int) -> bool:
            return len(result.acked) >= count

        await wait_until(lambda: acked(1000), timeout=60, what="1000 acknowledgements")
        instances[0].signal(signal.SIGKILL)
        answered_before_kill = sum(result.statuses.values()) + result.connection_errors
        await sending
        during = sum(result.statuses.values()) + result.connection_errors - answered_before_kill
        failed = sum(n for status, n in result.statuses.items() if not 200 <= status < 300) + result.connection_errors
        print(f"load balancer: {len(result.acked)} of {len(bodies)} acknowledged; after the kill {failed} of "
              f"{during} requests not 2xx ({100 * failed / max(during, 1):.2f} %); statuses {dict(result.statuses)}, "
              f"connection errors {result.connection_errors}")

        # The other instance keeps serving through HAProxy.
        after_bodies = make_tickets(200, seed=1951)
        after = await send_tickets("127.0.0.1", listen_port, after_bodies, concurrency=8, deadline_seconds=60)
        assert dict(after.statuses) == {202: 200}
        assert await instances[1].ready()

        # The worker, on another process, processes what both instances stored.
        async def processed() -> bool:
            return own_db.value("count_pending_tickets") == 0

        await wait_until(processed, timeout=60, what="the worker to process every ticket")
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for instance in instances:
            instance.stop()

    assert result.acked
    stored = {row[0] for row in own_db.rows("stored_ids")}
    for outcome, sent in ((result, bodies), (after, after_bodies)):
        assert [ticket_id for ticket_id in outcome.acked.values() if ticket_id not in stored] == []
        for index, ticket_id in list(outcome.acked.items())[::37]:
            assert bytes(own_db.rows("ticket_delivery", {"id": ticket_id})[0][1]) == sent[index]
