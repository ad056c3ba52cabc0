"""The middlewares every request goes through: JSON errors and request metrics, the
refusal of malformed requests before a handler reads them, and aiohttp's own refusals
logged as the one line every other client error gets."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..core.database_errors import DatabaseUnavailable
from ..telemetry.metrics import RefusalReason
from ..telemetry.refusal_log import refusal_log, refused
from .errors import RETRY_AFTER_UNAVAILABLE, ApiError
from .text import printable
from .typedefs import METRICS, TICKET_ID, Handler

log = logging.getLogger(__name__)


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def log_client_error(request: web.Request, status: int, message: str) -> None:
    """One line per refused request, without traceback: the client's mistake, not ours."""
    refused(
        log, logging.INFO, f"{status} on {printable(request.method, 20)} {_route_label(request)}",
        "%d on %s %s from %s: %s", status, request.method, printable(request.raw_path), request.remote, printable(message),
        ticket_id=request.get(TICKET_ID),
    )


@web.middleware
async def observe_and_answer_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON `{"error": ...}` (unexpected ones hide their internals),
    a client's error is logged in one line, and every request is counted by route,
    method and final status, and timed.

    One middleware, so the metrics see the status of the JSON error answer itself.
    """
    started = time.perf_counter()
    try:
        response = await handler(request)
    except ApiError as exc:
        if exc.status < 500:
            log_client_error(request, exc.status, exc.message)
        response = web.json_response({"error": exc.message}, status=exc.status, headers=exc.headers)
    except DatabaseUnavailable as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, exc)
        response = web.json_response(
            {"error": "database unavailable"}, status=503, headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE)}
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {name: value for name, value in exc.headers.items() if name in ("Allow", "Retry-After")}
        if exc.status < 500:
            log_client_error(request, exc.status, exc.reason)
        response = web.json_response({"error": exc.reason.lower()}, status=exc.status, headers=headers)
    except Exception:
        log.exception(
            "unexpected error on %s %s (ticket %s)", request.method, request.path, request.get(TICKET_ID, "none"),
            extra={"ticket_id": request.get(TICKET_ID)},
        )
        response = web.json_response({"error": "internal error"}, status=500)
    request.app[METRICS].observe_request(
        route=_route_label(request), method=request.method, status=response.status,
        seconds=time.perf_counter() - started,
    )
    return response


def nul_character_in(path: str, query: Iterable[tuple[str, str]]) -> str | None:
    """Where a NUL character is in the decoded path or query, else None.

    No stored text can contain one (PostgreSQL refuses NUL in text), so such a request
    is malformed, not a lookup that finds nothing.
    """
    if "\x00" in path:
        return "the path"
    for name, value in query:
        if "\x00" in name or "\x00" in value:
            return f"query parameter {printable(name)!r}"
    return None


def unsupported_content_encoding(content_encoding: str | None) -> str | None:
    """The Content-Encoding a body may not carry, or None for none or `identity`.

    A ticket is stored as the exact bytes received and its signature is over those
    bytes: decoding it on the way in would store and check something else, so an
    encoded body is refused (415) and the sender sends it plain.
    """
    if content_encoding is None:
        return None
    codings = [coding.strip().lower() for coding in content_encoding.split(",")]
    if all(coding in ("", "identity") for coding in codings):
        return None
    return content_encoding.strip()


def unsupported_transfer_coding(headers: Iterable[str]) -> str | None:
    """A transfer coding other than chunked (gzip, deflate…), else None. aiohttp only
    de-chunks: a body sent `gzip, chunked` would be stored still compressed."""
    codings = [coding.strip().lower() for header in headers for coding in header.split(",")]
    if all(coding in ("", "chunked", "identity") for coding in codings):
        return None
    return ", ".join(codings)


class MalformedRequestsInOneLine(logging.Filter):
    """aiohttp refuses a request its HTTP parser cannot read (a negative Content-Length,
    a bad chunk size…) with its own 400, and logs it as an ERROR with a traceback: a
    client's error, which any sender could use to flood the log and fire alerts. This
    filter makes each such record the one INFO line every other client error gets."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = record.exc_info[1] if record.exc_info else None
        if isinstance(failure, HttpProcessingError) and 400 <= (failure.code or 400) < 500:
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "%d on a malformed HTTP request from %s: %s", (
                failure.code or 400, remote, printable(str(failure.message), 200),
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
            return refusal_log().first_in_window(record.name, logging.INFO, f"{failure.code or 400} on a malformed HTTP request")
        return True


def log_malformed_requests_in_one_line() -> None:
    """Install the filter on aiohttp's server logger, once per process."""
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, MalformedRequestsInOneLine) for existing in server_log.filters):
        server_log.addFilter(MalformedRequestsInOneLine())


@web.middleware
async def refuse_malformed_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL in the path or query of a route, 501 for a transfer coding other
    than chunked, 415 for an encoded body, before any
    handler reads the body or takes a value to the database. (A path that matches no
    route is a 404 whatever it contains.)"""
    if request.match_info.route.resource is not None:
        # Only a query string can hold a query parameter: none is parsed for a request without one.
        where = nul_character_in(request.path, request.query.items() if request.query_string else ())
        if where is not None:
            raise ApiError(400, f"NUL character in {where}")
    transfer_encodings = request.headers.getall("Transfer-Encoding", ())
    transfer_coding = unsupported_transfer_coding(transfer_encodings) if transfer_encodings else None
    if transfer_coding is not None:
        raise ApiError(
            501, f"Transfer-Encoding {printable(transfer_coding, 40)!r} is not supported: send the body plain or chunked"
        )
    if request.body_exists and "Content-Encoding" in request.headers:
        # Every Content-Encoding header counts: a second one must not slip an encoding past.
        coding = unsupported_content_encoding(", ".join(request.headers.getall("Content-Encoding", [])) or None)
        if coding is not None:
            if request.method == "POST" and _route_label(request) == "/ticket":
                request.app[METRICS].refuse(RefusalReason.UNSUPPORTED_ENCODING)
            raise ApiError(
                415,
                f"Content-Encoding {printable(coding, 40)!r} is not accepted: send the body unencoded "
                "(the exact bytes received are stored and signed)",
            )
    return await handler(request)
