"""The log of a real `myticket serve` in json: every line one object, the start banner
included, the access log's fields, and each ticket's outcome findable by its id."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import aiohttp

from ..paths import REFERENCE_TICKET
from ..service_process import Service
from ..waiting import wait_until


async def test_json_log_has_one_object_per_line_and_every_ticket_id(database_url: str, tmp_path: Path):
    service = Service(
        database_url, tmp_path / "data", LOG_LEVEL="DEBUG", MYTICKET_LOG_FORMAT="json", MYTICKET_ACCESS_LOG="1"
    )
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            ids = {}
            for name, body in (("good", REFERENCE_TICKET), ("bad", b'not a ticket "quoted"\n')):
                async with session.post(f"{service.base}/ticket", data=body) as response:
                    assert response.status == 202
                    ids[name] = (await response.json())["id"]
            async with session.post(f"{service.base}/ticket", data=b"") as empty:
                assert empty.status == 400

            async def settled() -> bool:
                statuses = []
                for ticket_id in ids.values():
                    async with session.get(f"{service.base}/tickets/{ticket_id}") as response:
                        statuses.append((await response.json())["status"])
                return statuses == ["processed", "rejected"]

            await wait_until(settled, timeout=30, what="both tickets to be processed")
    finally:
        service.signal(signal.SIGTERM)
        await asyncio.to_thread(service.process.wait, 30)
        service.stop()

    lines = [line for line in service.log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in entries)
    assert all(entry["time"].endswith("Z") for entry in entries)
    assert any("Running on" in entry["message"] for entry in entries), "aiohttp's start banner"

    about = {name: [e for e in entries if e.get("ticket_id") == ticket_id] for name, ticket_id in ids.items()}
    access = [e for e in about["good"] if e["logger"] == "myticket.access"]
    assert len(access) == 1
    assert (access[0]["method"], access[0]["path"], access[0]["status"]) == ("POST", "/ticket", 202)
    assert access[0]["duration_seconds"] >= 0 and access[0]["client"] == "127.0.0.1"
    assert any(e["message"] == f"ticket {ids['good']} processed" for e in about["good"])
    rejected = [e for e in about["bad"] if "rejected" in e["message"]]
    assert len(rejected) == 1 and rejected[0]["level"] == "INFO"
    assert any(e["message"].startswith("400 on POST /ticket") for e in entries)
