"""Every metric the alerting rules and the Grafana dashboard query is in a real
/metrics answer of the app, with the labels they match on."""

from __future__ import annotations

import json
import re

import yaml

from ..paths import PROJECT_ROOT, REFERENCE_TICKET
from ..helpers import post, settled
from ..waiting import wait_until

RULES = yaml.safe_load((PROJECT_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
DASHBOARD = json.loads((PROJECT_ROOT / "deploy" / "grafana" / "myticket.json").read_text())
# Labels Prometheus adds to every series it scrapes.
TARGET_LABELS = {"job", "instance"}
SELECTOR = re.compile(r"\b(myticket_[a-z0-9_]+)\b(\{[^}]*\})?")


def rule_queries() -> list[str]:
    texts = []
    for group in RULES["groups"]:
        for rule in group["rules"]:
            texts.append(rule["expr"])
            texts.extend(rule.get("annotations", {}).values())
    return texts


def dashboard_queries() -> list[str]:
    texts = [variable["definition"] for variable in DASHBOARD["templating"]["list"]]
    for panel in DASHBOARD["panels"]:
        texts.extend(target["expr"] for target in panel.get("targets", []))
    return texts


def selectors(texts: list[str]) -> dict[str, set[str]]:
    """Metric name -> the label names matched on it, in every query of `texts`."""
    found: dict[str, set[str]] = {}
    for text in texts:
        for name, matchers in SELECTOR.findall(text):
            labels = set(re.findall(r"([a-zA-Z_]+)\s*[=!]~?", matchers)) - TARGET_LABELS
            found.setdefault(name, set()).update(labels)
    return found


def exported(metrics_text: str) -> dict[str, set[str]]:
    """Sample name -> its label names, from a /metrics answer."""
    found: dict[str, set[str]] = {}
    for line in metrics_text.splitlines():
        match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? ", line)
        if match:
            found.setdefault(match[1], set()).update(re.findall(r'(\w+)="', match[3] or ""))
    return found


def test_the_rules_and_the_dashboard_query_something():
    assert len(selectors(rule_queries())) >= 8
    assert len(selectors(dashboard_queries())) >= 15


async def test_every_queried_metric_and_label_is_in_a_real_metrics_answer(client):
    await settled(client, await post(client, REFERENCE_TICKET))
    await settled(client, await post(client, b"not a ticket"))
    wanted = selectors(rule_queries()) | selectors(dashboard_queries())
    missing: dict[str, set[str] | str] = {}

    async def all_exported() -> bool:
        samples = exported(await (await client.get("/metrics")).text())
        missing.clear()
        for name, labels in wanted.items():
            if name not in samples:
                missing[name] = "absent"
            elif not labels <= samples[name]:
                missing[name] = labels - samples[name]
        return not missing

    # The spool's and the worker's gauges are refreshed every second or so.
    await wait_until(all_exported, timeout=30, what=f"every queried metric in /metrics (missing: {missing})")
