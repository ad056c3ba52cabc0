"""The shipped alerting rules pass `promtool check rules` and their unit tests
(deploy/prometheus/alerts_test.yml), and the Prometheus configuration loads them.

promtool comes from Debian's `prometheus` package; make test installs it when missing (.ci/debian-tools)."""

from __future__ import annotations

import shutil
import subprocess

import yaml

from ..paths import PROJECT_ROOT

PROMETHEUS = PROJECT_ROOT / "deploy" / "prometheus"
# Every rule the monitoring how-to promises (docs/howto/monitoring.md).
EXPECTED_ALERTS = {
    "MyticketDown", "MyticketDatabaseUnavailable", "MyticketSpoolingTooLong", "MyticketSpoolNearlyFull",
    "MyticketBacklogGrowing", "MyticketOldestPendingTicketTooOld", "MyticketProcessingStalled",
    "MyticketRefusingTickets", "MyticketRejectedShareHigh",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    executable = shutil.which("promtool")
    assert executable, "promtool is missing: apt-get install -y prometheus (make test does it: .ci/debian-tools)"
    return subprocess.run([executable, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid_and_their_unit_tests_pass():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_prometheus_configuration_loads_the_rules():
    checked = promtool("check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "alerts.yml" in checked.stdout


def test_every_rule_is_there_and_has_a_unit_test_that_expects_it_to_fire():
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    fired = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    quiet = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if not case["exp_alerts"]
    }
    assert alerts == EXPECTED_ALERTS
    assert fired == alerts and quiet == alerts  # each one fires, and each one stays quiet when it should
