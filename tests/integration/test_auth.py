"""Nobody reads what is not theirs: the read routes need a token from MYTICKET_API_TOKENS
(or, with none configured, a loopback client); the webhook accepts several secrets."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from myticket.web.app import init_app
from myticket.config import ConfigError, Settings, load_settings
from myticket.web import auth
from myticket.web.auth import bearer_token, is_loopback, read_access_refusal, token_accepted, verify_signature
from myticket.web.errors import ApiError
from myticket.cli.send import send_ticket

from ..helpers import post
from ..paths import PROJECT_ROOT, REFERENCE_TICKET

TOKEN = "first-token-0123456789abcdef"
ROTATED = "second-token-0123456789abcdef"


def signed(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# -- the decision, without I/O ---------------------------------------------------------

@pytest.mark.parametrize("peer", ["127.0.0.1", "127.10.20.30", "::1", "::ffff:127.0.0.1"])
def test_loopback_peers(peer):
    assert is_loopback(peer)


@pytest.mark.parametrize("peer", ["10.0.0.1", "192.0.2.2", "172.17.0.1", "::ffff:10.0.0.1", "2001:db8::1", "", None, "localhost", "unix"])
def test_peers_that_are_not_loopback(peer):
    assert not is_loopback(peer)


@pytest.mark.parametrize(
    ("header", "token"),
    [(f"Bearer {TOKEN}", TOKEN), (f"bearer  {TOKEN} ", TOKEN), (f"Basic {TOKEN}", None), ("Bearer", None), ("Bearer ", None), (None, None), (TOKEN, None)],
)
def test_bearer_token_is_read_from_the_authorization_header(header, token):
    assert bearer_token(header) == token


def test_a_token_is_accepted_when_it_is_any_of_the_configured_ones():
    assert token_accepted(TOKEN, (TOKEN, ROTATED))
    assert token_accepted(ROTATED, (TOKEN, ROTATED))
    assert not token_accepted(TOKEN[:-1], (TOKEN, ROTATED))
    assert not token_accepted(TOKEN + "x", (TOKEN,))
    assert not token_accepted("é" * 20, (TOKEN,))
    assert not token_accepted(TOKEN, ())


def test_with_tokens_only_the_token_counts_wherever_the_client_is():
    tokens = (TOKEN, ROTATED)
    assert read_access_refusal(tokens, f"Bearer {TOKEN}", "203.0.113.9") is None
    assert read_access_refusal(tokens, f"Bearer {ROTATED}", "127.0.0.1") is None
    missing = read_access_refusal(tokens, None, "127.0.0.1")
    assert missing is not None and missing.status == 401 and missing.challenge.startswith("Bearer")
    wrong = read_access_refusal(tokens, "Bearer not-the-token-at-all", "127.0.0.1")
    assert wrong is not None and wrong.status == 401 and 'error="invalid_token"' in wrong.challenge


def test_without_tokens_loopback_reads_and_others_are_told_to_set_tokens():
    assert read_access_refusal((), None, "127.0.0.1") is None
    assert read_access_refusal((), None, "::1") is None
    refused = read_access_refusal((), None, "192.0.2.2")
    assert refused is not None and refused.status == 403 and "MYTICKET_API_TOKENS" in refused.message
    # A token sent to a service that has none configured opens nothing.
    assert read_access_refusal((), f"Bearer {TOKEN}", "192.0.2.2") is not None


# -- over HTTP -------------------------------------------------------------------------

@pytest.fixture
async def token_client(aiohttp_client, settings, db):
    return await aiohttp_client(await init_app(dataclasses.replace(settings, api_tokens=(TOKEN, ROTATED))))


READ_PATHS = ["/products", "/products/aZde", "/tickets/5b0c6f0e-1d2c-4b7a-9e3f-0a1b2c3d4e5f"]


@pytest.mark.parametrize("path", READ_PATHS)
async def test_read_routes_refuse_a_missing_or_wrong_token_with_401(token_client, path):
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": f"Basic {TOKEN}"}):
        response = await token_client.get(path, headers=headers)
        assert response.status == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "token" in (await response.json())["error"]


async def test_read_routes_answer_the_right_token_and_the_rotated_second_one(token_client):
    ticket_id = await post(token_client, REFERENCE_TICKET)  # POST /ticket needs no token
    for token in (TOKEN, ROTATED):
        headers = {"Authorization": f"Bearer {token}"}
        assert (await token_client.get("/products", headers=headers)).status == 200
        assert (await token_client.get(f"/tickets/{ticket_id}", headers=headers)).status == 200
        assert (await token_client.get("/products/nope", headers=headers)).status == 404


async def test_probes_metrics_and_the_webhook_need_no_token(token_client):
    assert (await token_client.get("/ping")).status == 200
    assert (await token_client.get("/ready")).status == 200
    assert (await token_client.get("/metrics")).status == 200
    assert (await token_client.post("/ticket", data=REFERENCE_TICKET)).status == 202
    # An unknown path is a 404 for anyone: it reveals nothing.
    assert (await token_client.get("/nothing/here")).status == 404


async def test_without_tokens_a_loopback_client_reads(client):
    # aiohttp's test client connects from 127.0.0.1.
    ticket_id = await post(client, REFERENCE_TICKET)
    assert (await client.get("/products")).status == 200
    assert (await client.get(f"/tickets/{ticket_id}")).status == 200


def request_from(app, path: str, peer: tuple[str, int], headers: dict[str, str] | None = None):
    """A request as the server would build it for a client at `peer`."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: peer if name == "peername" else default
    return make_mocked_request("GET", path, headers=headers, app=app, transport=transport)


@pytest.mark.parametrize("path", READ_PATHS)
async def test_without_tokens_a_client_elsewhere_gets_403_naming_the_variable(settings, path):
    app = await init_app(settings)
    app.freeze()

    # The whole middleware chain and router, without a socket: the test client can only
    # connect from loopback. The refusal comes before any handler touches the database.
    response = await app._handle(request_from(app, path, ("192.0.2.2", 40000)))

    assert response.status == 403
    assert b"MYTICKET_API_TOKENS" in response.body
    assert response.content_type == "application/json"


async def test_without_tokens_a_client_elsewhere_still_reaches_the_probes(settings):
    app = await init_app(settings)
    app.freeze()
    response = await app._handle(request_from(app, "/ping", ("192.0.2.2", 40000)))
    assert response.status == 200


# -- webhook secrets -------------------------------------------------------------------

def test_a_signature_under_any_configured_secret_is_accepted():
    secrets = ("new-secret", "old-secret")
    verify_signature(secrets, REFERENCE_TICKET, signed("new-secret", REFERENCE_TICKET))
    verify_signature(secrets, REFERENCE_TICKET, signed("old-secret", REFERENCE_TICKET))
    with pytest.raises(ApiError) as refused:
        verify_signature(secrets, REFERENCE_TICKET, signed("other", REFERENCE_TICKET))
    assert refused.value.status == 401


@pytest.mark.parametrize("scheme", ["sha1", "sha512", "", "sha256x", "md5"])
async def test_the_right_hmac_under_another_scheme_name_is_401(aiohttp_client, settings, db, scheme):
    """Only `sha256=` is accepted: the digest must be the one the scheme names."""
    client = await aiohttp_client(await init_app(dataclasses.replace(settings, webhook_secrets=("s3cret",))))
    right_hex = signed("s3cret", REFERENCE_TICKET).removeprefix("sha256=")

    response = await client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Signature": f"{scheme}={right_hex}"})

    assert response.status == 401
    assert await response.json() == {"error": "bad signature"}
    assert db.value("count_tickets") == 0
    # The same digest under its own scheme name, in either case, is accepted.
    accepted = await client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Signature": f"SHA256={right_hex.upper()}"})
    assert accepted.status == 202


async def test_the_webhook_accepts_either_secret_during_a_rotation(aiohttp_client, settings, db):
    app = await init_app(dataclasses.replace(settings, webhook_secrets=("new-secret", "old-secret")))
    client = await aiohttp_client(app)
    for secret in ("new-secret", "old-secret"):
        response = await client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Signature": signed(secret, REFERENCE_TICKET)})
        assert response.status == 202, secret
    refused = await client.post("/ticket", data=REFERENCE_TICKET, headers={"X-Signature": signed("gone", REFERENCE_TICKET)})
    assert refused.status == 401
    assert db.value("count_tickets") == 2


async def test_myticket_send_signs_with_the_first_configured_secret(aiohttp_client, settings, db):
    accepts_first_only = await aiohttp_client(await init_app(dataclasses.replace(settings, webhook_secrets=("first",))))
    sender = Settings(webhook_secrets=("first", "second"))
    url = str(accepts_first_only.make_url("/ticket"))

    code = await asyncio.to_thread(send_ticket, sender, PROJECT_ROOT / "bench" / "ticket.txt", url=url)

    assert code == 0
    assert db.value("count_tickets") == 1


# -- configuration ---------------------------------------------------------------------

def test_secrets_and_tokens_are_read_as_comma_separated_lists():
    settings = load_settings({"MYTICKET_WEBHOOK_SECRETS": "new, old", "MYTICKET_API_TOKENS": f"{TOKEN}, {ROTATED}"})
    assert settings.webhook_secrets == ("new", "old")
    assert settings.signing_secret == "new"
    assert settings.api_tokens == (TOKEN, ROTATED)


def test_the_single_secret_variable_keeps_working_and_is_taken_whole():
    settings = load_settings({"MYTICKET_WEBHOOK_SECRET": "a,b"})
    assert settings.webhook_secrets == ("a,b",)
    assert load_settings({}).webhook_secrets == ()
    assert load_settings({}).api_tokens == ()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MYTICKET_WEBHOOK_SECRET": ""}, "MYTICKET_WEBHOOK_SECRET: is set but empty"),
        ({"MYTICKET_WEBHOOK_SECRET": "  "}, "MYTICKET_WEBHOOK_SECRET: is set but empty"),
        ({"MYTICKET_WEBHOOK_SECRETS": ""}, "MYTICKET_WEBHOOK_SECRETS: is set but empty"),
        ({"MYTICKET_WEBHOOK_SECRETS": "hidden-a,,hidden-b"}, "MYTICKET_WEBHOOK_SECRETS: has an empty value"),
        ({"MYTICKET_WEBHOOK_SECRET": "hidden-a", "MYTICKET_WEBHOOK_SECRETS": "hidden-b"}, "MYTICKET_WEBHOOK_SECRET: set together with MYTICKET_WEBHOOK_SECRETS"),
        ({"MYTICKET_API_TOKENS": ""}, "MYTICKET_API_TOKENS: is set but empty"),
        ({"MYTICKET_API_TOKENS": f"{TOKEN},"}, "MYTICKET_API_TOKENS: has an empty value"),
        ({"MYTICKET_API_TOKENS": "hidden"}, "MYTICKET_API_TOKENS: token 1 must be at least 16 characters, got 6"),
        ({"MYTICKET_API_TOKENS": f"{TOKEN},hidden token with spaces"}, "MYTICKET_API_TOKENS: token 2 has a character"),
    ],
)
def test_empty_or_malformed_secrets_and_tokens_fail_at_start_without_quoting_them(environ, message):
    with pytest.raises(ConfigError) as raised:
        load_settings(environ)
    text = str(raised.value)
    assert text.startswith(message)
    assert "\n" not in text
    assert "hidden" not in text


def test_every_secret_is_compared_in_constant_time(monkeypatch):
    compared: list[tuple[bytes, bytes]] = []
    constant_time_compare = hmac.compare_digest

    def recording_compare(received, expected):
        compared.append((received, expected))
        return constant_time_compare(received, expected)

    monkeypatch.setattr(auth.hmac, "compare_digest", recording_compare)
    body = b"Order: 1\n"
    signature = hmac.new(b"second", body, hashlib.sha256).hexdigest()

    verify_signature(("first", "second", "third"), body, f"sha256={signature}")
    assert len(compared) == 3  # all are tried, so the time taken says nothing about which matched
    with pytest.raises(ApiError) as refused:
        verify_signature(("first",), body, "sha256=" + "0" * 64)
    assert refused.value.status == 401
    assert len(compared) == 4
