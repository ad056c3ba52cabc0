"""GET /openapi.json: a valid OpenAPI 3.1 document (openapi-spec-validator) of exactly the
app's routes and methods, open like /ping, that real answers of every route, success
and error, are valid against (openapi-core)."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

from myticket.web.app import init_app
from myticket.web.openapi import document_bytes
from myticket.web.routes import setup_routes
from myticket.web.server import HTTP_SERVER_OPTIONS

from ..paths import REFERENCE_TICKET
from ..helpers import post, settled

DOCUMENT = json.loads(document_bytes())
TOKEN = "a-token-of-at-least-16-characters"


def app_routes() -> set[tuple[str, str]]:
    app = web.Application()
    setup_routes(app)
    # HEAD is answered for every GET by aiohttp itself; the document lists the GETs.
    return {(route.method, route.resource.canonical) for route in app.router.routes() if route.method != "HEAD"}


def document_routes() -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item if method in methods}


def test_the_document_is_valid_openapi_3_1():
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_the_document_and_the_app_have_the_same_routes_and_methods():
    assert document_routes() == app_routes()


async def test_the_document_is_served_open_even_when_reads_need_a_token(aiohttp_client, settings, db):
    client = await aiohttp_client(await init_app(dataclasses.replace(settings, api_tokens=(TOKEN,))))

    response = await client.get("/openapi.json")

    assert response.status == 200 and response.content_type == "application/json"
    assert await response.json() == DOCUMENT
    assert (await client.get("/products")).status == 401  # while the read routes are closed


class AnswerChecker:
    """Sends requests and validates each answer against the document with openapi-core."""

    def __init__(self, client) -> None:
        self.client = client
        self.openapi = OpenAPI.from_dict(DOCUMENT)
        self.statuses: set[tuple[str, str, int]] = set()

    async def check(self, method: str, path: str, status: int, *, pattern: str | None = None, **kwargs) -> bytes:
        response = await self.client.request(method, path, **kwargs)
        body = await response.read()
        assert response.status == status, body
        url = response.url
        request = MockRequest(
            "http://localhost", method, url.path, path_pattern=pattern or url.path, args=dict(url.query),
            headers=dict(kwargs.get("headers", {})), data=kwargs.get("data"),
            content_type=kwargs.get("headers", {}).get("Content-Type", "application/octet-stream"),
        )
        answer = MockResponse(
            body, status_code=response.status, headers=dict(response.headers),
            content_type=response.headers.get("Content-Type", ""),
        )
        self.openapi.validate_response(request, answer)  # raises on any mismatch
        self.statuses.add((method, pattern or url.path, status))
        return body


@pytest.fixture
async def checker(client):
    return AnswerChecker(client)


async def test_real_answers_of_every_route_are_valid_against_the_document(checker, client):
    check = checker.check
    await check("GET", "/ping", 200)
    await check("GET", "/ready", 200)
    await check("GET", "/openapi.json", 200)
    good = json.loads(await check("POST", "/ticket", 202, data=REFERENCE_TICKET, headers={"Content-Type": "text/plain"}))["id"]
    bad = await post(client, b"not a ticket")
    await settled(client, good)
    await settled(client, bad)
    await check("GET", "/metrics", 200)
    await check("POST", "/ticket", 400, data=b"", headers={"Content-Type": "text/plain"})
    await check("POST", "/ticket", 415, data=gzip.compress(REFERENCE_TICKET),
                headers={"Content-Type": "text/plain", "Content-Encoding": "gzip"})
    await check("POST", "/ticket", 417, data=REFERENCE_TICKET, headers={"Content-Type": "text/plain", "Expect": "magic"})
    for ticket_id in (good, bad):
        await check("GET", f"/tickets/{ticket_id}", 200, pattern="/tickets/{ticket_id}")
    await check("GET", f"/tickets/{good}?lines_limit=1", 200, pattern="/tickets/{ticket_id}")
    await check("GET", f"/tickets/{good}?lines_limit=0", 400, pattern="/tickets/{ticket_id}")
    await check("GET", "/tickets/00000000-0000-0000-0000-000000000000", 404, pattern="/tickets/{ticket_id}")
    products = json.loads(await check("GET", "/products?limit=1", 200))
    await check("GET", "/products?limit=abc", 400)
    await check("GET", "/products/a%00b", 400, pattern="/products/{product_id}")
    product_id = products["products"][0]["product_id"]
    await check("GET", f"/products/{product_id}", 200, pattern="/products/{product_id}")
    await check("GET", "/products/no-such-product", 404, pattern="/products/{product_id}")
    await check("GET", "/tickets?status=rejected&status=processed&limit=1", 200)
    await check("GET", "/tickets?order_ref=1&since=2020-01-01", 200)
    await check("GET", "/tickets?limit=0", 400)
    await check("GET", f"/tickets/{bad}/body", 200, pattern="/tickets/{ticket_id}/body")
    await check("GET", "/tickets/00000000-0000-0000-0000-000000000000/body", 404, pattern="/tickets/{ticket_id}/body")
    await check("POST", f"/tickets/{good}/reprocess", 409, pattern="/tickets/{ticket_id}/reprocess")
    await check("POST", f"/tickets/{bad}/reprocess", 202, pattern="/tickets/{ticket_id}/reprocess")
    await check("POST", "/tickets/00000000-0000-0000-0000-000000000000/reprocess", 404,
                pattern="/tickets/{ticket_id}/reprocess")
    await check("POST", "/tickets/reprocess?since=2020-01-01&status=duplicate", 202)
    await check("POST", "/tickets/reprocess", 400)
    keyed = {"Content-Type": "text/plain", "Idempotency-Key": "openapi-1"}
    await check("POST", "/ticket", 202, data=REFERENCE_TICKET, headers=keyed)
    await check("POST", "/ticket", 202, data=REFERENCE_TICKET, headers=keyed)  # the replay, with its header
    await check("POST", "/ticket", 409, data=b"another body", headers=keyed)

    assert {(method, path) for method, path, _ in checker.statuses} == app_routes()


async def test_refusals_that_need_another_configuration_are_valid_against_the_document(aiohttp_client, settings, db):
    configured = dataclasses.replace(settings, api_tokens=(TOKEN,), webhook_secrets=("s3cret",), max_body_bytes=1024,
                                     max_pending_bytes=1024)
    server = TestServer(await init_app(configured))
    await server.start_server(**HTTP_SERVER_OPTIONS)
    checker = AnswerChecker(await aiohttp_client(server))
    text = {"Content-Type": "text/plain"}

    await checker.check("POST", "/ticket", 401, data=REFERENCE_TICKET, headers=text)
    await checker.check("POST", "/ticket", 413, data=b"x" * 2048, headers=text)
    await checker.check("GET", "/products", 401)
    await checker.check("GET", "/tickets/x", 401, pattern="/tickets/{ticket_id}")
    await checker.check("GET", "/products", 200, headers={"Authorization": f"Bearer {TOKEN}"})
