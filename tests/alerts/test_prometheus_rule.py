"""The chart's PrometheusRule: rendered only when asked and served, and equal to the rules' source.

``helm template`` with and without ``--api-versions monitoring.coreos.com/v1/PrometheusRule``
(what ``.Capabilities.APIVersions`` says the cluster serves): the rule is created only
when ``metrics.prometheusRule.enabled`` and the kind is served; its groups are those of
``chart/rules/alerts.yaml``, which promtool tests, with the chart's options applied. On
the real control plane, with the Prometheus Operator's real PrometheusRule CRD, the API
server accepts the rendered rule (a server-side dry run).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from blacklist_devtools import prometheus_crds
from blacklist_devtools.kube import Cluster
from tests.alerts.rules import alerts, groups
from tests.chart.helm import Manifest, only, render

pytestmark = pytest.mark.helm

PROMETHEUS_RULE_API = "monitoring.coreos.com/v1/PrometheusRule"


def prometheus_rules(*set_values: str, served: bool = True) -> list[Manifest]:
    api_versions = (PROMETHEUS_RULE_API,) if served else ()
    manifests = render(*set_values, api_versions=api_versions)
    return [manifest for manifest in manifests if manifest["kind"] == "PrometheusRule"]


def rendered_alerts(rule: Manifest) -> dict[str, dict[str, Any]]:
    return {alert["alert"]: alert for group in rule["spec"]["groups"] for alert in group["rules"]}


def test_rendered_only_when_enabled_and_served() -> None:
    assert prometheus_rules() == []
    assert prometheus_rules("metrics.prometheusRule.enabled=true", served=False) == []
    assert len(prometheus_rules("metrics.prometheusRule.enabled=true")) == 1


def test_rendered_rules_equal_the_source() -> None:
    rule = only(prometheus_rules("metrics.prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"] == "ops-blacklist-operator"
    assert rule["metadata"]["namespace"] == "blacklist-system"
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == "ops"
    assert rule["spec"]["groups"] == groups()


def test_options_label_filter_and_link_the_rules() -> None:
    base = "https://example.com/blacklist-operator/blob/v0.1.0/"
    rule = only(
        prometheus_rules(
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=prometheus",
            "metrics.prometheusRule.annotations.owner=security",
            "metrics.prometheusRule.ruleLabels.team=security",
            "metrics.prometheusRule.ruleLabels.severity=page",
            f"metrics.prometheusRule.runbookBaseUrl={base}",
            "metrics.prometheusRule.disabled.BlacklistBanListNearlyFull=true",
        ),
        "PrometheusRule",
    )
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    assert rule["metadata"]["annotations"] == {"owner": "security"}
    rendered = rendered_alerts(rule)
    expected = {source["alert"]: source for source in alerts()}
    assert rendered.keys() == expected.keys() - {"BlacklistBanListNearlyFull"}
    for name, alert in rendered.items():
        source = expected[name]
        # The alert's own severity wins over a rule label of the same name.
        assert alert["labels"] == {"team": "security", **source["labels"]}
        runbook = alert["annotations"]["runbook_url"]
        assert runbook == base + source["annotations"]["runbook_url"]
        assert {
            key: value for key, value in alert.items() if key not in {"labels", "annotations"}
        } == {key: value for key, value in source.items() if key not in {"labels", "annotations"}}


@pytest.fixture(scope="session")
def prometheus_rule_crd(cluster: Cluster) -> Cluster:
    """The cluster with the Prometheus Operator's real PrometheusRule CRD (left installed).

    As for the ServiceMonitor CRD (``tests/conftest.py``): cluster-wide, so removing it
    would delete other sessions' rules; applying it again is a no-op.
    """
    path = prometheus_crds.crd_path("prometheusrules")
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/prometheusrules.monitoring.coreos.com",
        "--timeout=60s",
    )
    return cluster


@pytest.mark.cluster
def test_the_api_server_accepts_the_rendered_rule(
    prometheus_rule_crd: Cluster, namespace: str
) -> None:
    rule = only(
        prometheus_rules(
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.ruleLabels.team=security",
            "metrics.prometheusRule.runbookBaseUrl=https://example.com/",
        ),
        "PrometheusRule",
    )
    rule["metadata"]["namespace"] = namespace
    output = prometheus_rule_crd.kubectl(
        "apply", "--server-side", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(rule),
    )  # fmt: skip
    accepted = json.loads(output)
    assert accepted["spec"]["groups"] == rule["spec"]["groups"]
