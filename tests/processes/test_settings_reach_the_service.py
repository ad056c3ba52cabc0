"""Settings read from the environment by a real `myticket serve`, end to end: tests
that build `Settings` directly cannot see a variable the service never reads."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import aiohttp

from ..paths import REFERENCE_TICKET
from ..service_process import Service


async def test_a_webhook_secret_set_in_the_environment_turns_signatures_on(database_url: str, tmp_path: Path):
    service = Service(database_url, tmp_path / "data", MYTICKET_WEBHOOK_SECRET="environment-secret")
    await service.start()
    try:
        signature = hmac.new(b"environment-secret", REFERENCE_TICKET, hashlib.sha256).hexdigest()
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{service.base}/ticket", data=REFERENCE_TICKET) as unsigned:
                assert unsigned.status == 401
            async with session.post(
                f"{service.base}/ticket", data=REFERENCE_TICKET, headers={"X-Signature": f"sha256={signature}"}
            ) as signed:
                assert signed.status == 202
    finally:
        service.stop()
