"""`myticket send FILE` (and `make send`): POST a ticket file to a running service.

A small client for trying the service by hand: the exact bytes of the file, signed
with MYTICKET_WEBHOOK_SECRET, or the first of MYTICKET_WEBHOOK_SECRETS, when one is set
(as the service will then require), and
the answer printed as it came. The secret never appears on a command line.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ..config import Settings

SEND_TIMEOUT_SECONDS = 10


class SendError(Exception):
    """The ticket could not be sent (unreadable file, no answer); one line."""


def signature_header(secret: str, body: bytes) -> str:
    """The X-Signature value the service checks: `sha256=` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send_ticket(settings: Settings, path: Path, *, url: str | None = None) -> int:
    """POST the file; print the status line and the body; 0 on a 2xx answer, else 1."""
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise SendError(f"cannot read {path}: {exc.strerror}") from None
    target = url or f"http://127.0.0.1:{settings.http_port}/ticket"
    headers = {"Content-Type": "text/plain"}
    if settings.signing_secret is not None:
        headers["X-Signature"] = signature_header(settings.signing_secret, body)
    request = urllib.request.Request(target, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT_SECONDS) as response:
            status, reason, answer = response.status, response.reason, response.read()
    except urllib.error.HTTPError as exc:
        status, reason, answer = exc.code, exc.reason, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise SendError(f"no answer from {target}: {getattr(exc, 'reason', exc)}") from None
    print(f"{status} {reason}")
    sys.stdout.flush()
    sys.stdout.buffer.write(answer + b"\n")
    return 0 if 200 <= status < 300 else 1
