"""Fixtures of the operator tests: the CRD installed, and one operator per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blacklist_devtools.kube import Cluster
from tests.conftest import module_namespaces
from tests.operator.helpers import OperatorProcess, install_crd


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> Cluster:
    """The cluster with the BlacklistService CRD installed."""
    install_crd(cluster)
    return cluster


@pytest.fixture(scope="module")
def operator_process(
    crd: Cluster, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    """One operator watching the namespaces of this module's tests, for the whole module.

    hostPath volumes are allowed only under the session's temporary directory,
    as a cluster admin would allow one data directory of the nodes.
    """
    allowed = f"--allowed-host-path-prefix={tmp_path_factory.getbasetemp()}"
    operator = OperatorProcess(
        crd,
        tmp_path_factory.mktemp("operator"),
        allowed,
        "--namespace",
        module_namespaces(request.module.__name__),
    ).start()
    yield operator
    operator.stop()
