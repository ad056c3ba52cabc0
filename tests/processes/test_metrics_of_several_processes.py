"""`serve --processes 2`: every scrape, whichever process answers it, shows the whole
service's totals and every gauge, and a restarted worker process lowers no counter."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp

from myticket.db.embedded import EmbeddedPostgres

from ..database import Db
from ..helpers import sample
from ..service_process import Service
from ..waiting import wait_until
from ..load import make_tickets, send_tickets
from .test_faults import child_processes, the_worker_process

TICKETS = 1000


async def scrape(service: Service) -> str:
    """One /metrics on a new connection, so that the kernel may hand it to either process."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        async with session.get(f"{service.base}/metrics") as response:
            assert response.status == 200
            return await response.text()


def totals(text: str) -> dict[str, float | None]:
    outcomes = [sample(text, "myticket_tickets_processed_total", {"outcome": o}) for o in ("processed", "rejected", "duplicate")]
    return {
        "accepted": sample(text, "myticket_tickets_accepted_total"),
        "outcomes": sum(value or 0 for value in outcomes),
        "ticket_posts": sample(text, "myticket_http_requests_total", {"route": "/ticket", "method": "POST", "status": "202"}),
        "pending": sample(text, "myticket_pending_tickets"),
        "oldest_pending_age": sample(text, "myticket_oldest_pending_age_seconds"),
        "database_up": sample(text, "myticket_database_up"),
    }


async def test_every_scrape_shows_the_whole_service_and_a_worker_restart_lowers_nothing(
    own_server: EmbeddedPostgres, own_db: Db, tmp_path: Path
):
    service = Service(own_server.url, tmp_path / "data", HTTP_PROCESSES="2")
    await service.start()
    try:
        http_processes = {
            cmdline.split(b"\0")[0].decode(): pid for pid, cmdline in child_processes()[service.process.pid]
        }
        assert {"myticket: http 0", "myticket: http 1"} <= set(http_processes)
        owner_of_the_worker = http_processes["myticket: http 0"]
        sent = await send_tickets("127.0.0.1", service.port, make_tickets(TICKETS, seed=2020), concurrency=16)
        assert len(sent.acked) == TICKETS

        expected = {
            "accepted": TICKETS, "outcomes": TICKETS, "ticket_posts": TICKETS,
            "pending": 0, "oldest_pending_age": 0, "database_up": 1,
        }
        seen: list[dict] = []

        async def five_scrapes_show_everything() -> bool:
            # The processes publish their totals twice a second and the worker reports
            # every second: once the service is quiet, every scrape must agree.
            seen[:] = [totals(await scrape(service)) for _ in range(5)]
            return all(scraped == expected for scraped in seen)

        await wait_until(five_scrapes_show_everything, timeout=60, what=f"five scrapes all showing {expected}")

        worker = await the_worker_process(owner_of_the_worker)
        before = totals(await scrape(service))
        os.kill(worker, signal.SIGKILL)
        await the_worker_process(owner_of_the_worker, other_than=worker)
        for _ in range(5):  # the worker's counts are kept by its HTTP process: nothing lower
            assert totals(await scrape(service))["outcomes"] == before["outcomes"]
        sent_again = await send_tickets("127.0.0.1", service.port, make_tickets(10, seed=2021), concurrency=2)
        assert len(sent_again.acked) == 10

        expected = {**expected, "accepted": TICKETS + 10, "outcomes": TICKETS + 10, "ticket_posts": TICKETS + 10}
        await wait_until(five_scrapes_show_everything, timeout=60, what="the new worker's outcomes added to the old")
    finally:
        service.stop()
