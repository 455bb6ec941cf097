"""Shared fixtures: the cluster, a namespace per test, PostgreSQL and SMTP.

Each fixture starts the real component it stands for, so a test that needs one
never skips: the cluster starts if it is not running (and is stopped at the end
of the session if this session started it, unless BLACKLIST_KEEP_CLUSTER=1),
PostgreSQL starts once per test module, the SMTP server once per test. With
``--kubeconfig PATH`` (``tests/tiers.py``) the cluster is that one instead, and
the local test bed is neither started nor stopped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import prometheus_crds
from blacklist_devtools.kube import Cluster
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.smtp import SmtpServer


def tool(name: str) -> str:
    """A binary of the toolchain (``.local/bin``, built by ``make setup``), else from ``PATH``."""
    path = local_cluster.BIN_DIR / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is neither in {local_cluster.BIN_DIR} nor on PATH")
    return found


def kubeconfig_server(kubeconfig: Path) -> str:
    """The API server URL of the current context of ``kubeconfig``."""
    document = yaml.safe_load(kubeconfig.read_text())
    contexts = {entry["name"]: entry["context"] for entry in document.get("contexts") or []}
    clusters = {entry["name"]: entry["cluster"] for entry in document.get("clusters") or []}
    context = contexts[document["current-context"]]
    return str(clusters[context["cluster"]]["server"])


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The cluster of ``--kubeconfig``, else the local control plane, started if not running."""
    given = request.config.getoption("kubeconfig")
    if given is not None:
        kubeconfig = Path(given).resolve()
        server = kubeconfig_server(kubeconfig)
        yield Cluster(kubeconfig=kubeconfig, server=server, kubectl_path=tool("kubectl"))
        return
    previous = local_cluster.ClusterState.load()
    was_running = previous is not None and local_cluster.healthy(previous)
    state = local_cluster.up()
    yield Cluster(
        kubeconfig=local_cluster.KUBECONFIG,
        server=state.server,
        kubectl_path=local_cluster.binary("kubectl"),
    )
    if not was_running and os.environ.get("BLACKLIST_KEEP_CLUSTER") != "1":
        local_cluster.down()


@pytest.fixture(scope="session")
def service_monitor_crd(cluster: Cluster) -> Cluster:
    """The cluster with the Prometheus Operator's real ServiceMonitor CRD installed.

    The pinned release's CRD, fetched through the Go module proxy into a cache
    outside the repository (``blacklist_devtools.prometheus_crds``). It is left
    installed: a CRD is cluster-wide, and removing it would delete the
    ServiceMonitors of test sessions running in parallel; applying it again is a no-op.
    """
    path = prometheus_crds.crd_path(prometheus_crds.SERVICE_MONITORS)
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=60s",
    )
    return cluster


# Every namespace of this test session starts with this prefix, so the operators a
# session starts watch only its own namespaces (``SESSION_NAMESPACES``), never those of
# another session sharing the cluster.
SESSION_PREFIX = f"test-{uuid.uuid4().hex[:6]}"
SESSION_NAMESPACES = f"{SESSION_PREFIX}-*"


def module_namespaces(module: str) -> str:
    """The glob of the namespaces the tests of ``module`` create (within ``SESSION_NAMESPACES``).

    A module's operator watches only these, so it never meets the namespaces, still
    being deleted, of the modules before it: as an operator confined to one team's
    namespaces would not.
    """
    return f"{SESSION_PREFIX}-{hashlib.sha256(module.encode()).hexdigest()[:4]}-*"


def namespace_name(module: str) -> str:
    """A new namespace name of ``module``'s tests (matched by ``module_namespaces``)."""
    return module_namespaces(module).replace("*", uuid.uuid4().hex[:10])


def fresh_namespace(cluster: Cluster, module: str) -> Iterator[str]:
    """Create a namespace of ``module``'s tests, yield its name, delete it (without waiting)."""
    name = namespace_name(module)
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, deleted (without waiting) after the test."""
    yield from fresh_namespace(cluster, request.module.__name__)


@pytest.fixture
def other_namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second fresh namespace, for tests about what happens across namespaces."""
    yield from fresh_namespace(cluster, request.module.__name__)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port, one per test module.

    Its directory is a fresh one under the system temp dir, not pytest's
    ``tmp_path`` (mode 0700 for root), which the ``postgres`` user could not enter.
    """
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


@pytest.fixture
def smtp_server(tmp_path: Path) -> Iterator[SmtpServer]:
    """A real SMTP server that stores every mail it receives in a directory."""
    server = SmtpServer(mailbox=tmp_path / "mailbox")
    server.start()
    yield server
    server.stop()
