"""The README stays true: every variable the service reads and every route is documented."""

from __future__ import annotations

from aiohttp import web

from myticket.config import ENVIRONMENT_VARIABLES
from myticket.web.routes import setup_routes

from ..conftest import PROJECT_ROOT

README = (PROJECT_ROOT / "README.md").read_text()


def test_every_environment_variable_is_documented():
    missing = [name for name in ENVIRONMENT_VARIABLES if f"`{name}`" not in README]
    assert missing == []


def test_every_route_is_documented():
    app = web.Application()
    setup_routes(app)
    documented = {
        f"{route.method} {route.resource.canonical}" for route in app.router.routes() if route.method != "HEAD"
    }
    missing = sorted(route for route in documented if f"`{route}" not in README)
    assert missing == []


def test_the_two_commands_come_first():
    assert README.index("make run") < README.index("## Routes")
    assert README.index("make test") < README.index("## Routes")
