"""The deployed product for end-to-end tests: Helm chart, pod runner, SMTP server, one CR.

Everything goes through the user's path: ``helm install`` of ``chart/``,
``kubectl apply`` of ``examples/blacklistservice.yaml``, and HTTP to the pods,
which the local pod runner runs as processes configured only from the objects
the operator wrote.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import stack
from blacklist_devtools.kube import Cluster


@pytest.fixture(scope="module")
def deployed(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[stack.Deployed]:
    """The chart installed and the example applied with 2 replicas, Ready."""
    work = tmp_path_factory.mktemp("e2e")
    with stack.deploy(cluster, local_cluster.binary("helm"), work, replicas=2) as deployment:
        yield deployment
