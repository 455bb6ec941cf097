"""The Grafana dashboard of the chart (``chart/dashboards/blacklist.json``) reads real metrics.

Every metric name in a panel's or a variable's query, and in an alert's expression
(``chart/rules/alerts.yaml``), must be one that a real process exposes on
``/metrics``: the service's names are checked here, on a service scraped after the
requests that make each series appear (a square, a hit, its deliveries); the
operator's (``blacklist_operator_*``) on a real operator process after a ban, in
``tests/operator/test_metrics.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from tests.alerts.rules import rule_metric_names
from tests.service.processes import ServiceFactory

DASHBOARD = Path(__file__).resolve().parents[2] / "chart" / "dashboards" / "blacklist.json"
# A metric name in PromQL: an identifier of ours, not a label, function or variable.
METRIC_NAME = re.compile(r"\bblacklist_[a-z0-9_]+\b")
# The operator's metrics; every other name of ours is the service's.
OPERATOR_METRIC = re.compile(r"blacklist_operator_")
# What the dashboard must show (the titles of its panels).
REQUIRED_PANELS = {
    "Hits",
    "Bans",
    "Ban-list size",
    "Ban propagation",
    "Delivery backlog (outbox pending)",
    "Operator reconciles",
    "Operator ban list per instance",
    "Operator sync lag",
    "Ledger row to ban list latency",
}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    found = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else str(query))
    return found


def used_metric_names() -> set[str]:
    return {name for query in queries(dashboard()) for name in METRIC_NAME.findall(query)}


def exposed_sample_names(text: str) -> set[str]:
    return {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_dashboard_is_a_grafana_dashboard_with_the_promised_panels() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] == "blacklist-service"
    assert board["title"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    assert {panel["title"] for panel in board["panels"]} >= REQUIRED_PANELS
    for panel in board["panels"]:
        assert panel["type"] in {"timeseries", "stat"}
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
    assert {variable["name"] for variable in board["templating"]["list"]} == {
        "datasource",
        "namespace",
        "service",
    }
    assert used_metric_names()
    assert any(OPERATOR_METRIC.match(name) for name in used_metric_names())


@pytest.mark.slow
def test_every_metric_of_the_dashboard_and_alerts_is_exported_by_the_service(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory()
    queried = used_metric_names() | rule_metric_names()
    wanted = {name for name in queried if not OPERATOR_METRIC.match(name)}
    assert get(f"{service.url}/?n=3", source="127.0.0.3").body == "9.0"
    # A hit (and its ledger and mail deliveries) and a refusal make the labelled series appear.
    assert get(f"{service.url}/blacklisted", source="127.0.0.4").status == 444
    assert get(f"{service.url}/?n=3", source="127.0.0.4").status == 403

    def scraped() -> set[str]:
        answer = get(service.metrics_url)
        assert answer.status == 200
        return exposed_sample_names(answer.body)

    wait_until(lambda: wanted <= scraped(), timeout=30, interval=0.5)
    assert wanted - scraped() == set()
