"""The deployed product for end-to-end tests: Helm chart, SMTP server, one CR, real pods.

Everything goes through the user's path: ``helm install`` of ``chart/``,
``kubectl apply`` of ``examples/blacklistservice.yaml``, and HTTP to the pods,
containers that the local node's kubelet runs from the objects the operator wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blacklist_devtools import stack
from blacklist_devtools.kube import Cluster
from tests.conftest import tool


@pytest.fixture(scope="module")
def deployed(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[stack.Deployed]:
    """The chart installed and the example applied with 2 replicas, Ready."""
    work = tmp_path_factory.mktemp("e2e")
    with stack.deploy(cluster, tool("helm"), work, replicas=2) as deployment:
        yield deployment
