"""The alerting rules' one source (``chart/rules/alerts.yaml``) for the tests that read it.

The chart's PrometheusRule renders it and promtool tests it; the metric tests check
that every metric name its expressions use is one that a real process exports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "chart" / "rules" / "alerts.yaml"
RULE_TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"
RUNBOOKS = REPO_ROOT / "docs" / "alerts.md"
# A metric name in PromQL: an identifier of ours, not a label, function or variable.
METRIC_NAME = re.compile(r"\bblacklist_[a-z0-9_]+\b")


def groups() -> list[dict[str, Any]]:
    """The rule groups of the source file, parsed."""
    loaded: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return list(loaded["groups"])


def alerts() -> list[dict[str, Any]]:
    """Every alerting rule of every group."""
    return [rule for group in groups() for rule in group["rules"]]


def rule_metric_names() -> set[str]:
    """Every metric name of ours that an alert's expression reads."""
    return {name for rule in alerts() for name in METRIC_NAME.findall(rule["expr"])}
