"""Standard Webhooks beside X-Signature: requests signed by the `standardwebhooks`
library (what Svix and other platforms send) are accepted under a `whsec_` secret or a
plain one, during a rotation, and refused when the signature, the secret or the
timestamp is wrong; a retry with the same webhook-id is stored once."""

from __future__ import annotations

import base64
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook

from myticket.web.app import init_app

from ..paths import REFERENCE_TICKET

WHSEC = "whsec_" + base64.b64encode(b"a sender's secret of 32 bytes!!!").decode()
OTHER_WHSEC = "whsec_" + base64.b64encode(b"another secret, also 32 bytes..").decode()
PLAIN = "a plain shared secret"


def signed_headers(webhook: Webhook, message_id: str, body: bytes, at: datetime | None = None) -> dict[str, str]:
    """The three headers a Standard Webhooks sender puts on a request, signed by the library."""
    at = at or datetime.now(timezone.utc)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": webhook.sign(message_id, at, body),
    }


@pytest.fixture
async def secured(aiohttp_client, settings, db):
    """An app whose webhook secrets are a whsec_ secret, then a plain one (rotation)."""
    app = await init_app(dataclasses.replace(settings, run_worker=False, webhook_secrets=(WHSEC, PLAIN)))
    return await aiohttp_client(app)


async def test_a_request_signed_by_the_library_is_accepted_under_either_secret(secured, db):
    for webhook, message_id in ((Webhook(WHSEC), "msg_1"), (Webhook(PLAIN.encode()), "msg_2")):
        response = await secured.post(
            "/ticket", data=REFERENCE_TICKET, headers=signed_headers(webhook, message_id, REFERENCE_TICKET)
        )
        assert response.status == 202, await response.text()
    assert db.value("count_tickets") == 2


async def test_several_signatures_pass_when_one_of_them_is_under_a_configured_secret(secured):
    headers = signed_headers(Webhook(OTHER_WHSEC), "msg_rotated", REFERENCE_TICKET)
    now = datetime.fromtimestamp(int(headers["webhook-timestamp"]), timezone.utc)
    ours = Webhook(WHSEC).sign("msg_rotated", now, REFERENCE_TICKET)
    headers["webhook-signature"] = f"v2,ignored {headers['webhook-signature']} {ours}"
    assert (await secured.post("/ticket", data=REFERENCE_TICKET, headers=headers)).status == 202


async def test_a_retry_with_the_same_webhook_id_is_stored_once(secured, db):
    first = await secured.post(
        "/ticket", data=REFERENCE_TICKET, headers=signed_headers(Webhook(WHSEC), "msg_retry", REFERENCE_TICKET)
    )
    later = datetime.now(timezone.utc) + timedelta(seconds=30)  # a retry: a new timestamp and signature
    retry = await secured.post(
        "/ticket", data=REFERENCE_TICKET,
        headers=signed_headers(Webhook(WHSEC), "msg_retry", REFERENCE_TICKET, at=later),
    )
    assert retry.status == 202 and retry.headers["Idempotent-Replayed"] == "true"
    assert (await retry.json())["id"] == (await first.json())["id"]
    assert db.value("count_tickets") == 1


async def test_without_a_secret_the_webhook_id_still_keeps_a_retry_from_being_stored_twice(quiet_app, db):
    headers = signed_headers(Webhook(WHSEC), "msg_unsigned_setup", REFERENCE_TICKET)
    ids = {(await (await quiet_app.post("/ticket", data=REFERENCE_TICKET, headers=headers)).json())["id"]
           for _ in range(2)}
    assert len(ids) == 1 and db.value("count_tickets") == 1


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("wrong_secret", "bad signature"),
        ("other_body", "bad signature"),
        ("other_id", "bad signature"),
        ("too_old", "minutes from now"),
        ("too_new", "minutes from now"),
        ("no_timestamp", "webhook-timestamp"),
        ("no_id", "webhook-id"),
        ("bad_timestamp", "unix seconds"),
        ("not_v1", "bad signature"),
    ],
)
async def test_a_wrong_signature_secret_or_timestamp_is_401_and_stores_nothing(secured, db, change, says):
    now = datetime.now(timezone.utc)
    webhook = Webhook(OTHER_WHSEC) if change == "wrong_secret" else Webhook(WHSEC)
    at = {"too_old": now - timedelta(minutes=6), "too_new": now + timedelta(minutes=6)}.get(change, now)
    headers = signed_headers(webhook, "msg_x", REFERENCE_TICKET + (b"!" if change == "other_body" else b""), at)
    if change == "other_id":
        headers["webhook-id"] = "msg_y"
    if change == "no_timestamp":
        del headers["webhook-timestamp"]
    if change == "no_id":
        del headers["webhook-id"]
    if change == "bad_timestamp":
        headers["webhook-timestamp"] = "soon"
    if change == "not_v1":
        headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v1a,")
    response = await secured.post("/ticket", data=REFERENCE_TICKET, headers=headers)
    assert response.status == 401
    assert says in (await response.json())["error"]
    assert db.value("count_tickets") == 0


async def test_within_the_tolerance_an_older_timestamp_is_accepted(secured):
    at = datetime.now(timezone.utc) - timedelta(minutes=4)
    headers = signed_headers(Webhook(WHSEC), "msg_late", REFERENCE_TICKET, at)
    assert (await secured.post("/ticket", data=REFERENCE_TICKET, headers=headers)).status == 202


async def test_x_signature_still_works_beside_it(secured):
    import hashlib
    import hmac

    signature = "sha256=" + hmac.new(PLAIN.encode(), REFERENCE_TICKET, hashlib.sha256).hexdigest()
    assert (await secured.post("/ticket", data=REFERENCE_TICKET, headers={"X-Signature": signature})).status == 202
    unsigned = await secured.post("/ticket", data=REFERENCE_TICKET)
    assert unsigned.status == 401 and "missing X-Signature" in (await unsigned.json())["error"]
