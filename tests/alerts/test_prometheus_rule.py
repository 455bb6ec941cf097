"""The chart's PrometheusRule: rendered only when asked and served, and equal to the rules' source.

``helm template`` with and without ``--api-versions monitoring.coreos.com/v1/PrometheusRule``
(what ``.Capabilities.APIVersions`` says the cluster serves): the rule is created only
when ``metrics.prometheusRule.enabled`` and the kind is served; its groups are those of
``chart/rules/alerts.yaml``, which promtool tests, with the chart's options applied.
"""

from __future__ import annotations

from typing import Any

import pytest

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
