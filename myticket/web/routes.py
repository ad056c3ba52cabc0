"""The route table: which handler answers which method and path."""

from __future__ import annotations

from aiohttp import web

from .openapi import openapi_document
from .probes import metrics, ping, ready
from .reads import get_product, get_ticket, get_ticket_body, list_products, list_tickets
from .requeue import reprocess_ticket, reprocess_tickets
from .tickets import expect_ticket, post_ticket


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/ping", ping)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/ticket", post_ticket, expect_handler=expect_ticket)
    app.router.add_get("/tickets", list_tickets)
    app.router.add_post("/tickets/reprocess", reprocess_tickets)
    # Not "reprocess": that path is the bulk requeue's alone (GET there is 405, not a ticket id).
    app.router.add_get("/tickets/{ticket_id:(?!reprocess$)[^/]+}", get_ticket)
    app.router.add_get("/tickets/{ticket_id}/body", get_ticket_body)
    app.router.add_post("/tickets/{ticket_id}/reprocess", reprocess_ticket)
    app.router.add_get("/products", list_products)
    app.router.add_get("/products/{product_id}", get_product)
    app.router.add_get("/openapi.json", openapi_document)
