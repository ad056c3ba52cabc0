"""Where the checkout and the reference tickets are: plain constants, importable by every
tier (nothing here loads the database driver or the web framework)."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = TESTS_DIR.parent
REFERENCE_TICKET = (PROJECT_ROOT / "bench" / "ticket.txt").read_bytes()
CP1252_TICKET = "Order: 77\nVAT: 0.50\nTotal: 3.00\n\nproduct,product_id,price\nCafé crème,CC01,3.00\n".encode("cp1252")
