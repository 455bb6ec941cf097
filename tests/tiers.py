"""The test tiers, ``--tier`` and ``--kubeconfig``: a pytest plugin (loaded by ``conftest.py``).

Every test is put in one tier (:func:`tier_of`) from its markers and the fixtures
it uses: ``unit`` (in-process, nothing started), ``process`` (real local processes:
the service, PostgreSQL, SMTP, helm, promtool, a Python program) or ``cluster``
(a Kubernetes cluster). Plain ``pytest`` runs the unit tier; ``--tier`` chooses
others (``all``: every test), and so do named paths, ``-m``, ``-k`` and ``--kubeconfig``
(:func:`selected_tiers`). The options live here, in a plugin the root
``conftest.py`` loads, because pytest reads them before it collects ``tests/``:
``pytest --kubeconfig PATH`` would otherwise take PATH for a test path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TIERS = ("unit", "process", "cluster")
# A test that uses one of these fixtures (directly or through another) needs the cluster.
CLUSTER_FIXTURES = frozenset({"cluster"})
# One that uses one of these starts a real local process (a server it talks to).
PROCESS_FIXTURES = frozenset({"postgres", "smtp_server", "service_factory"})
# Markers that say a test runs a real local process (the tier marker itself, or what it runs).
PROCESS_MARKERS = frozenset({"process", "postgres", "helm", "promtool"})
# The tests of the local test bed itself (marked ``testbed`` here; others in their modules).
TESTBED_DIRECTORY = Path(__file__).parent / "cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--tier`` and ``--kubeconfig``."""
    group = parser.getgroup("blacklist", "blacklist-operator test tiers")
    group.addoption(
        "--tier",
        action="append",
        choices=(*TIERS, "all"),
        default=[],
        help="run this tier (repeatable; 'all': every test). Default: unit, or every tier "
        "of the paths named, or cluster with --kubeconfig",
    )
    group.addoption(
        "--kubeconfig",
        default=None,
        metavar="PATH",
        help="run the cluster tests against the cluster of this kubeconfig (any cluster) "
        "instead of starting the local test bed; tests of the test bed itself are left out",
    )


def tier_of(item: pytest.Item) -> str:
    """The tier of ``item``: the first of cluster, process, unit its markers or fixtures need."""
    marks = {mark.name for mark in item.iter_markers()}
    fixtures = set(getattr(item, "fixturenames", ()))
    if "cluster" in marks or fixtures & CLUSTER_FIXTURES:
        return "cluster"
    if marks & PROCESS_MARKERS or fixtures & PROCESS_FIXTURES:
        return "process"
    return "unit"


def selected_tiers(config: pytest.Config) -> tuple[str, ...]:
    """The tiers this run selects.

    ``--tier`` when given; else every tier when paths are named or ``-m`` or ``-k`` is
    given (the user chose the tests); else cluster with ``--kubeconfig``; else unit.
    """
    chosen: list[str] = config.getoption("tier")
    if chosen:
        return TIERS if "all" in chosen else tuple(tier for tier in TIERS if tier in chosen)
    chose = config.getoption("markexpr") or config.getoption("keyword")
    if config.args_source == pytest.Config.ArgsSource.ARGS or chose:
        return TIERS
    if config.getoption("kubeconfig"):
        return ("cluster",)
    return ("unit",)


def pytest_report_header(config: pytest.Config) -> str:
    """Say which tiers run, and how to run the others."""
    where = config.getoption("kubeconfig") or "the local test bed"
    return f"tiers: {', '.join(selected_tiers(config))} (--tier all: every test); cluster: {where}"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with its tier and deselect those of the tiers not selected.

    First, so that ``-m`` sees the tier markers. With ``--kubeconfig`` the tests of
    the local test bed itself (marker ``testbed``) are deselected: there is none.
    """
    tiers = selected_tiers(config)
    foreign = config.getoption("kubeconfig") is not None
    kept, deselected = [], []
    for item in items:
        tier = tier_of(item)
        item.add_marker(tier)
        if item.path.is_relative_to(TESTBED_DIRECTORY):
            item.add_marker("testbed")
        if tier in tiers and not (foreign and item.get_closest_marker("testbed")):
            kept.append(item)
        else:
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept
