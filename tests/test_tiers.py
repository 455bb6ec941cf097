"""The tiers plugin (``tests/tiers.py``): which tests each command selects, each in a session."""

from __future__ import annotations

from typing import Any

import pytest

# A project with one test of each kind; fixtures of the names the plugin reads, starting nothing.
CONFTEST = """
import pytest

@pytest.fixture
def postgres():
    return "a server"

@pytest.fixture
def cluster(request):
    return request.config.getoption("kubeconfig") or "the local test bed"

@pytest.fixture
def namespace(cluster):
    return "a namespace"
"""
TESTS = """
import pytest

def test_pure():
    pass

def test_database(postgres):
    pass

@pytest.mark.process
def test_program():
    pass

def test_on_a_cluster(namespace, cluster):
    assert cluster == "{cluster}"

@pytest.mark.testbed
def test_the_test_bed(cluster):
    pass
"""


def run(pytester: pytest.Pytester, *arguments: str, cluster: str = "the local test bed") -> Any:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_kinds=TESTS.replace("{cluster}", cluster))
    pytester.makeini("[pytest]\nmarkers =\n    unit\n    process\n    cluster\n    testbed\n")
    return pytester.runpytest_inprocess("-p", "tests.tiers", "-q", *arguments)


def test_plain_pytest_runs_the_unit_tier(pytester: pytest.Pytester) -> None:
    result = run(pytester)
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.no_fnmatch_line("*test_database*")


def test_a_fixture_or_marker_puts_a_test_in_its_tier(pytester: pytest.Pytester) -> None:
    run(pytester, "--tier", "process").assert_outcomes(passed=2, deselected=3)
    run(pytester, "--tier", "cluster").assert_outcomes(passed=2, deselected=3)
    run(pytester, "--tier", "unit", "--tier", "process").assert_outcomes(passed=3, deselected=2)
    # The tier markers are there for -m too (which then selects across tiers).
    run(pytester, "-m", "process or unit").assert_outcomes(passed=3, deselected=2)


def test_all_tiers_select_every_test(pytester: pytest.Pytester) -> None:
    run(pytester, "--tier", "all").assert_outcomes(passed=5)


def test_named_paths_and_keywords_run_every_tier_of_their_tests(pytester: pytest.Pytester) -> None:
    run(pytester, "test_kinds.py").assert_outcomes(passed=5)
    run(pytester, "test_kinds.py::test_database").assert_outcomes(passed=1)
    run(pytester, "-k", "database or on_a_cluster").assert_outcomes(passed=2, deselected=3)


def test_a_kubeconfig_runs_the_cluster_tier_there_without_the_test_bed_tests(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, "--kubeconfig", "elsewhere.yaml", cluster="elsewhere.yaml")
    result.assert_outcomes(passed=1, deselected=4)
    result.stdout.fnmatch_lines(["*1 passed*"])
    # Every tier, but still not the tests of the local test bed.
    result = run(
        pytester, "--kubeconfig", "elsewhere.yaml", "--tier", "all", cluster="elsewhere.yaml"
    )
    result.assert_outcomes(passed=4, deselected=1)
