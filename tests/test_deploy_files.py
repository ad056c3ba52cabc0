"""No Docker engine runs here, so these check that Dockerfile and docker-compose.yml
agree with the application: port, variable names, health path, command."""

from __future__ import annotations

import json
import re
import tomllib
from urllib.parse import urlsplit

import yaml

from myticket.config import ENVIRONMENT_VARIABLES, Settings
from myticket.routes import setup_routes

from .conftest import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())


def dockerfile_instructions(keyword: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(keyword + " ")]


def registered_paths() -> set[str]:
    from aiohttp import web

    app = web.Application()
    setup_routes(app)
    return {resource.canonical for resource in app.router.resources()}


def test_dockerfile_runs_the_console_script_in_exec_form():
    (cmd,) = dockerfile_instructions("CMD")
    assert json.loads(cmd) == ["myticket", "serve"]
    assert PYPROJECT["project"]["scripts"]["myticket"] == "myticket.cli:main"


def test_dockerfile_port_health_path_and_user_match_the_app():
    port = Settings().http_port
    assert dockerfile_instructions("EXPOSE") == [str(port)]
    (healthcheck,) = dockerfile_instructions("HEALTHCHECK")
    match = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", healthcheck)
    assert match and int(match[1]) == port
    assert match[2] in registered_paths() and match[2] == "/ready"
    users = dockerfile_instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert all(image.startswith("python:3.11-slim") for image in dockerfile_instructions("FROM"))


def test_dockerfile_environment_uses_known_variables():
    names = set()
    for env in dockerfile_instructions("ENV"):
        names.update(re.findall(r"([A-Z_][A-Z0-9_]*)=", env))
    assert names - {"PATH", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"} <= set(
        ENVIRONMENT_VARIABLES
    )


def test_compose_service_matches_the_app_and_its_database():
    service = COMPOSE["services"]["myticket"]
    postgres = COMPOSE["services"]["postgres"]
    port = Settings().http_port

    assert f"{port}:{port}" in service["ports"]
    assert set(service["environment"]) <= set(ENVIRONMENT_VARIABLES)
    assert int(service["environment"]["HTTP_PORT"]) == port
    assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in postgres

    url = urlsplit(service["environment"]["DATABASE_URL"])
    assert url.scheme == "postgresql"
    assert url.hostname == "postgres"
    assert url.username == postgres["environment"]["POSTGRES_USER"]
    assert url.password == postgres["environment"]["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["environment"]["POSTGRES_DB"]


def test_compose_keeps_the_data_directory_on_a_volume():
    service = COMPOSE["services"]["myticket"]
    data_dir = service["environment"]["MYTICKET_DATA_DIR"]
    assert any(volume.endswith(":" + data_dir) for volume in service["volumes"])
    assert f"MYTICKET_DATA_DIR={data_dir}" in DOCKERFILE.replace(" ", "")
