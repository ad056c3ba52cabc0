"""Who may send and who may read.

Sending: with MYTICKET_WEBHOOK_SECRET(S) set, a POST /ticket body must carry its
HMAC-SHA256 in X-Signature (`verify_signature`), or be signed the Standard Webhooks way
(`verify_standard_webhook`: webhook-id, webhook-timestamp, webhook-signature), checked
once the body is read (`verify_sender` picks by the headers present).

Reading: the read routes (`/tickets/…`, `/products…`) serve stored receipts, so they
need a bearer token from MYTICKET_API_TOKENS; with none configured, loopback clients
only. The probes (`/ping`, `/ready`, `/metrics`) and the API document (`/openapi.json`)
stay open: load balancers and scrapers carry no token.

Requeueing (`POST /tickets/…/reprocess`) changes what is stored, so it may be given
tokens of its own, MYTICKET_ADMIN_TOKENS: once set, only those are accepted there (a
read token, as handed to a dashboard or a support tool, cannot requeue). Unset, the
read routes' rule applies to requeueing too. The decision is a pure function of the configured tokens, the
Authorization header and the peer address; the middleware only feeds it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from .errors import ApiError
from .typedefs import SETTINGS, Handler

# Routes anyone who reaches the port may use; every other route is a read route. New
# routes are protected unless added here.
PUBLIC_ROUTES = frozenset({"/ping", "/ready", "/metrics", "/ticket", "/openapi.json"})

# Routes that change stored tickets: MYTICKET_ADMIN_TOKENS, when set, guards them.
ADMIN_ROUTES = frozenset({"/tickets/reprocess", "/tickets/{ticket_id}/reprocess"})

# RFC 6750: the challenge names the scheme, and says why a token was not accepted.
CHALLENGE = 'Bearer realm="myticket"'
CHALLENGE_BAD_TOKEN = 'Bearer realm="myticket", error="invalid_token"'


@dataclass(frozen=True)
class Refusal:
    status: int
    message: str
    challenge: str | None = None


def is_loopback(peer: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1 (IPv4-mapped too); False for anything else, an
    unknown peer included."""
    if not peer:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme in any case)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def token_accepted(token: str, tokens: tuple[str, ...]) -> bool:
    """Whether `token` is one of `tokens`, compared in constant time against every one
    (no early exit, so the time does not say which token, or how much of it, matched)."""
    received = token.encode("utf-8", "surrogateescape")
    accepted = False
    for candidate in tokens:
        accepted |= hmac.compare_digest(received, candidate.encode())
    return accepted


def read_access_refusal(tokens: tuple[str, ...], authorization: str | None, peer: str | None) -> Refusal | None:
    """None when the request may read; else why not.

    With tokens configured only the token counts, wherever the client is. Without, a
    loopback client may read (`make run` on a laptop) and anyone else is told what to set.
    """
    if tokens:
        token = bearer_token(authorization)
        if token is None:
            return Refusal(401, "missing Authorization: Bearer <token> (a token from MYTICKET_API_TOKENS)", CHALLENGE)
        if not token_accepted(token, tokens):
            return Refusal(401, "bad token", CHALLENGE_BAD_TOKEN)
        return None
    if is_loopback(peer):
        return None
    return Refusal(
        403,
        "read routes answer loopback clients only while no token is configured: "
        "set MYTICKET_API_TOKENS and send Authorization: Bearer <token>",
    )


def admin_access_refusal(admin_tokens: tuple[str, ...], authorization: str | None) -> Refusal | None:
    """None when the request may requeue under MYTICKET_ADMIN_TOKENS; else why not."""
    token = bearer_token(authorization)
    if token is None:
        return Refusal(
            401, "missing Authorization: Bearer <token> (a token from MYTICKET_ADMIN_TOKENS)", CHALLENGE
        )
    if not token_accepted(token, admin_tokens):
        return Refusal(401, "bad token (requeueing takes a token from MYTICKET_ADMIN_TOKENS)", CHALLENGE_BAD_TOKEN)
    return None


def verify_signature(secrets: Sequence[str], body: bytes, header: str | None) -> None:
    """X-Signature must be `sha256=` and the hex HMAC-SHA256 of the raw body under one
    of `secrets` (several during a rotation).

    Each secret is compared in constant time and all are tried, so the time taken says
    nothing about which one matched. The received value is compared as bytes: a header
    with non-ASCII characters is a bad signature, not an error of ours.
    """
    if not header:
        raise ApiError(401, "missing X-Signature header (sha256=<hex HMAC-SHA256 of the body>)")
    scheme, _, received = header.strip().partition("=")
    received_bytes = received.strip().lower().encode("utf-8", "surrogateescape")
    matched = False
    for secret in secrets:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(received_bytes, expected)
    if scheme.lower() != "sha256" or not matched:
        raise ApiError(401, "bad signature")


# Standard Webhooks: a signature older or newer than this is refused (replay protection;
# the specification's five minutes, which also absorbs clock skew between sender and us).
WEBHOOK_TOLERANCE_SECONDS = 5 * 60
WHSEC_PREFIX = "whsec_"


def standard_webhook_key(secret: str) -> bytes:
    """The HMAC key of a configured secret under Standard Webhooks: a `whsec_<base64>`
    secret is its decoded bytes (as the senders' libraries use it); any other secret is
    its UTF-8 bytes, as for X-Signature."""
    if secret.startswith(WHSEC_PREFIX):
        encoded = secret[len(WHSEC_PREFIX):]
        try:
            return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass  # not base64 after all: the secret as written
    return secret.encode()


def verify_standard_webhook(secrets: Sequence[str], body: bytes, headers: Mapping[str, str], now: float) -> None:
    """webhook-signature must hold, among its space-separated `v1,<base64>` entries, the
    HMAC-SHA256 of `<webhook-id>.<webhook-timestamp>.<body>` under one of `secrets`; and
    webhook-timestamp (unix seconds) must be within WEBHOOK_TOLERANCE_SECONDS of `now`.
    Every entry is compared with every secret, in constant time each."""
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature") or ""
    if not message_id or not timestamp:
        raise ApiError(401, "webhook-signature needs webhook-id and webhook-timestamp headers")
    stamp = timestamp.strip()
    if not (stamp.isascii() and stamp.isdigit()):
        raise ApiError(401, "webhook-timestamp must be unix seconds")
    if abs(now - int(stamp)) > WEBHOOK_TOLERANCE_SECONDS:
        raise ApiError(
            401, f"webhook-timestamp is more than {WEBHOOK_TOLERANCE_SECONDS // 60} minutes from now (replay protection)"
        )
    signed = b"%s.%s." % (message_id.encode("utf-8", "surrogateescape"), stamp.encode()) + body
    expected = [
        base64.b64encode(hmac.new(standard_webhook_key(secret), signed, hashlib.sha256).digest())
        for secret in secrets
    ]
    matched = False
    for entry in signatures.split(" "):
        version, _, received = entry.partition(",")
        if version != "v1":
            continue
        received_bytes = received.encode("utf-8", "surrogateescape")
        for candidate in expected:
            matched |= hmac.compare_digest(received_bytes, candidate)
    if not matched:
        raise ApiError(401, "bad signature")


def verify_sender(secrets: Sequence[str], body: bytes, headers: Mapping[str, str], now: float) -> None:
    """Standard Webhooks when the request carries webhook-signature, else X-Signature."""
    if "webhook-signature" in headers:
        verify_standard_webhook(secrets, body, headers, now)
    else:
        verify_signature(secrets, body, headers.get("X-Signature"))


@web.middleware
async def require_read_access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse a read route to a request without the right token (or, with no token
    configured, from a client that is not on this host). Unmatched paths pass through:
    their 404 or 405 reveals nothing."""
    resource = request.match_info.route.resource
    if resource is not None and resource.canonical not in PUBLIC_ROUTES:
        settings = request.app[SETTINGS]
        authorization = request.headers.get("Authorization")
        if resource.canonical in ADMIN_ROUTES and settings.admin_tokens:
            refusal = admin_access_refusal(settings.admin_tokens, authorization)
        else:
            refusal = read_access_refusal(settings.api_tokens, authorization, request.remote)
        if refusal is not None:
            headers = {"WWW-Authenticate": refusal.challenge} if refusal.challenge else None
            raise ApiError(refusal.status, refusal.message, headers=headers)
    return await handler(request)
