"""The route table: which handler answers which method and path."""

from __future__ import annotations

from aiohttp import web

from .openapi import openapi_document
from .probes import metrics, ping, ready
from .reads import get_product, get_ticket, list_products
from .tickets import expect_ticket, post_ticket


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ping", ping)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/ticket", post_ticket, expect_handler=expect_ticket)
    app.router.add_get("/tickets/{ticket_id}", get_ticket)
    app.router.add_get("/products", list_products)
    app.router.add_get("/products/{product_id}", get_product)
    app.router.add_get("/openapi.json", openapi_document)
