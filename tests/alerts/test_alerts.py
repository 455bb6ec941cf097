"""The alerting rules of ``chart/rules/alerts.yaml``, checked and unit-tested with promtool.

``promtool check rules`` parses every expression and template; ``promtool test rules``
runs ``alerts_test.yaml``, where every alert has a case in which it fires and one in
which it stays silent (checked here too, so a new alert cannot go untested). Each alert
has a severity, a summary, a description and a runbook section in ``docs/alerts.md``.
promtool is built from Go modules by ``make setup`` (hack/toolchain.sh); without it these
tests fail and say so, they never skip.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from typing import Any

import pytest
import yaml

from blacklist_devtools.cluster import binary
from tests.alerts.rules import RULE_TESTS, RULES, RUNBOOKS, alerts

pytestmark = pytest.mark.promtool


def promtool(*arguments: str) -> str:
    """Run promtool; fail with its whole output when it fails."""
    completed = subprocess.run(
        [binary("promtool"), *arguments], capture_output=True, text=True, check=False
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"promtool {' '.join(arguments)} failed:\n{output}"
    return output


def test_promtool_checks_the_rules() -> None:
    output = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert f"SUCCESS: {len(alerts())} rules found" in output


def test_promtool_unit_tests_pass() -> None:
    output = promtool("test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in output


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent() -> None:
    cases: dict[str, list[bool]] = defaultdict(list)
    loaded: dict[str, Any] = yaml.safe_load(RULE_TESTS.read_text())
    for test in loaded["tests"]:
        for case in test["alert_rule_test"]:
            cases[case["alertname"]].append(bool(case["exp_alerts"]))
    for rule in alerts():
        assert True in cases[rule["alert"]], f"{rule['alert']} never fires in {RULE_TESTS.name}"
        assert False in cases[rule["alert"]], f"{rule['alert']} never stays silent"


def test_every_alert_is_documented_and_links_its_runbook() -> None:
    runbooks = RUNBOOKS.read_text()
    headings = set(re.findall(r"^## (\w+)$", runbooks, re.MULTILINE))
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names))
    assert headings == set(names)
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"].keys() == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"docs/alerts.md#{name.lower()}"
        section = runbooks.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for part in ("Meaning", "Impact", "Diagnosis", "Fix"):
            assert f"**{part}.**" in section, f"{name}'s runbook has no {part}"
        assert "kubectl " in section, f"{name}'s runbook has no kubectl command"
