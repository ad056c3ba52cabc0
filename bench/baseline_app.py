"""A bare aiohttp app for the calibration rows of bench/run.py.

GET /ping answers "pong"; POST /ticket reads the body and answers 202 with a fresh id,
storing nothing. Measured in the same run as the service, it shows what aiohttp alone
costs on this machine: the service's POST rate can be read against this ceiling.
"""

from __future__ import annotations

import sys
import uuid

from aiohttp import web


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def take_and_forget(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"id": "%s"}' % str(uuid.uuid4()).encode(), status=202, content_type="application/json")


def main() -> None:
    app = web.Application()
    app.router.add_get("/ping", ping)
    app.router.add_post("/ticket", take_and_forget)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
