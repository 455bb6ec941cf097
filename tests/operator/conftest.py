"""Fixtures of the operator tests: the CRD installed, and one operator per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blacklist_devtools.kube import Cluster
from tests.conftest import SESSION_NAMESPACES
from tests.operator.helpers import OperatorProcess, install_crd


@pytest.fixture(scope="session")
def crd(cluster: Cluster) -> Cluster:
    """The cluster with the BlacklistService CRD installed."""
    install_crd(cluster)
    return cluster


@pytest.fixture(scope="module")
def operator_process(
    crd: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """One operator watching every namespace of this test session for the whole module.

    hostPath volumes are allowed only under the session's temporary directory,
    as a cluster admin would allow one data directory of the nodes.
    """
    allowed = f"--allowed-host-path-prefix={tmp_path_factory.getbasetemp()}"
    operator = OperatorProcess(
        crd, tmp_path_factory.mktemp("operator"), allowed, "--namespace", SESSION_NAMESPACES
    ).start()
    yield operator
    operator.stop()
