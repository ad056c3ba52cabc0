"""GET /openapi.json: the OpenAPI 3.1 document of every route, shipped beside this module.

The document is the contract the tests hold the app to (every route and method in it,
every real answer valid against it), so it is a file, not generated from the handlers.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

DOCUMENT = "openapi.json"


@functools.cache
def document_bytes() -> bytes:
    return resources.files(__package__).joinpath(DOCUMENT).read_bytes()


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=document_bytes(), content_type="application/json")
