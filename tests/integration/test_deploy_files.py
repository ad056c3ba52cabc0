"""No Docker engine runs here, so these check that Dockerfile and docker-compose.yml
agree with the application: port, variable names, health path, command."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from myticket.web.app import init_app
from myticket.config import ENVIRONMENT_VARIABLES, Settings
from myticket.web.routes import setup_routes

from ..paths import PROJECT_ROOT
from ..service_process import free_port

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
    match = re.search(r"HTTP_PORT', '(\d+)'.*http://127\.0\.0\.1:\{port\}(/\w+)", healthcheck)
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


def healthcheck_command() -> list[str]:
    (healthcheck,) = dockerfile_instructions("HEALTHCHECK")
    return json.loads(healthcheck.split("CMD", 1)[1])


async def test_dockerfile_health_check_asks_the_port_named_by_http_port(client):
    command = [sys.executable if word == "python" else word for word in healthcheck_command()]
    serving = {**os.environ, "HTTP_PORT": str(client.server.port)}
    elsewhere = {**os.environ, "HTTP_PORT": str(free_port())}

    healthy = await asyncio.to_thread(subprocess.run, command, env=serving, capture_output=True, timeout=30)
    unhealthy = await asyncio.to_thread(subprocess.run, command, env=elsewhere, capture_output=True, timeout=30)

    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode != 0


def make_targets(target: str, **variables: str) -> subprocess.CompletedProcess:
    """`make -n TARGET` with `variables` overridden: the commands it would run."""
    overrides = [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(
        ["make", "-n", "-f", str(PROJECT_ROOT / "Makefile"), target, *overrides],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=30,
    )


def test_make_run_installs_what_serving_needs_and_not_the_test_tools(tmp_path):
    planned = make_targets("run", VENV=str(tmp_path / "venv")).stdout
    installs = [line for line in planned.splitlines() if "pip install" in line and " -e " in line]
    assert installs == [f"{tmp_path / 'venv'}/bin/pip install --quiet -e '.[embedded]'"]
    assert "myticket serve" in planned


async def test_make_send_signs_with_the_secret_and_does_not_echo_its_command(aiohttp_client, settings, db, tmp_path):
    app = await init_app(dataclasses.replace(settings, webhook_secrets=("s3cret",)))
    client = await aiohttp_client(app)
    stamp = tmp_path / "installed"
    stamp.write_text("")  # newer than pyproject.toml: make installs nothing
    # --no-print-directory: under `make test` this make is nested, and would say so.
    command = ["make", "--no-print-directory", "send", f"RUN_STAMP={stamp}", f"BIN={Path(sys.executable).parent}"]
    environment = {**os.environ, "HTTP_PORT": str(client.server.port), "MYTICKET_WEBHOOK_SECRET": "s3cret"}

    signed = await asyncio.to_thread(
        subprocess.run, command, cwd=PROJECT_ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
    wrong = await asyncio.to_thread(
        subprocess.run, command, cwd=PROJECT_ROOT, env={**environment, "MYTICKET_WEBHOOK_SECRET": "other"},
        capture_output=True, text=True, timeout=60,
    )

    assert signed.returncode == 0, signed.stdout + signed.stderr
    assert signed.stdout.splitlines()[0] == "202 Accepted"
    assert "myticket send" not in signed.stdout + signed.stderr
    assert wrong.returncode != 0 and wrong.stdout.splitlines()[0] == "401 Unauthorized"
    assert db.value("count_tickets") == 1


def test_compose_runs_prometheus_with_the_rules_and_grafana_under_the_monitoring_profile():
    prometheus, grafana = COMPOSE["services"]["prometheus"], COMPOSE["services"]["grafana"]
    assert prometheus["profiles"] == ["monitoring"] and grafana["profiles"] == ["monitoring"]
    for name in ("postgres", "myticket"):  # `docker compose up` alone starts what it always did
        assert "profiles" not in COMPOSE["services"][name]

    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    config_dir = mounts["/etc/prometheus"]
    assert (PROJECT_ROOT / config_dir).resolve() == (PROJECT_ROOT / "deploy" / "prometheus").resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "myticket"  # the job the rules' `up{job="myticket"}` names
    assert job["metrics_path"] in registered_paths()
    assert job["static_configs"][0]["targets"] == [f"myticket:{Settings().http_port}"]

    grafana_mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    provisioning = PROJECT_ROOT / grafana_mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and f"{prometheus['ports'][0].split(':')[1]}" == "9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "myticket.yml").read_text())["providers"]
    dashboard_file = grafana_mounts[f"{provider['options']['path']}/myticket.json"]
    dashboard = json.loads((PROJECT_ROOT / dashboard_file).read_text())
    used = {
        target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    }
    assert used == {datasource["uid"]}
