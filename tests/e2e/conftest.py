"""The deployed product for end-to-end tests: Helm chart, pod runner, SMTP server, one CR.

Everything goes through the user's path: ``helm install`` of ``chart/``,
``kubectl apply`` of ``examples/blacklistservice.yaml``, and HTTP to the pods,
which the local pod runner runs as processes configured only from the objects
the operator wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import stack
from blacklist_devtools.kube import Cluster
from blacklist_devtools.smtp import SmtpServer

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = REPO_ROOT / "examples" / "blacklistservice.yaml"
READY_TIMEOUT = 240.0


@dataclass
class Deployed:
    """The product as deployed for one test module."""

    cluster: Cluster
    helm_path: str
    release: str
    operator_namespace: str
    namespace: str
    name: str
    smtp: SmtpServer
    runner: subprocess.Popen[bytes]
    runner_dir: Path

    def instance(self) -> stack.Instance:
        """Where the ready instance listens now."""
        return stack.instance(self.cluster, self.namespace, self.name)

    def resource(self) -> dict[str, Any]:
        """The BlacklistService as the API has it."""
        return stack.get_json(self.cluster, "blacklistservice", self.name, "-n", self.namespace)


def example_resource(namespace: str, smtp: SmtpServer) -> dict[str, Any]:
    """``examples/blacklistservice.yaml`` with alerts sent to the test's SMTP server."""
    resource: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    resource["metadata"]["namespace"] = namespace
    mail = resource["spec"].setdefault("mail", {})
    mail.update({"host": smtp.host, "port": smtp.port})
    mail.pop("secretRef", None)
    return resource


@pytest.fixture(scope="module")
def deployed(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    """Install the chart, apply the example with 2 replicas, wait until it is Ready."""
    suffix = uuid.uuid4().hex[:6]
    work = tmp_path_factory.mktemp("e2e")
    smtp = SmtpServer(mailbox=work / "mailbox")
    smtp.start()
    runner_dir = work / "pods"
    runner_log = (work / "podrunner.log").open("wb")
    runner = subprocess.Popen(
        [sys.executable, "-m", "blacklist_devtools.podrunner",
         "--kubeconfig", str(cluster.kubeconfig), "--state-dir", str(runner_dir)],
        stdout=runner_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    helm_path = local_cluster.binary("helm")
    deployment = Deployed(
        cluster=cluster,
        helm_path=helm_path,
        release=f"e2e-{suffix}",
        operator_namespace=f"e2e-operator-{suffix}",
        namespace=f"e2e-{suffix}",
        name="",
        smtp=smtp,
        runner=runner,
        runner_dir=runner_dir,
    )
    try:
        stack.helm(
            cluster, helm_path, "install", deployment.release, str(REPO_ROOT / "chart"),
            "--namespace", deployment.operator_namespace, "--create-namespace",
            "--wait", "--timeout", "120s",
        )  # fmt: skip
        cluster.kubectl("create", "namespace", deployment.namespace)
        resource = example_resource(deployment.namespace, smtp)
        deployment.name = resource["metadata"]["name"]
        cluster.kubectl("apply", "-f", "-", input=json.dumps(resource))
        stack.wait_ready(cluster, deployment.namespace, deployment.name, READY_TIMEOUT)
        yield deployment
    finally:
        cluster.kubectl("delete", "namespace", deployment.namespace, "--wait=false", check=False)
        subprocess.run(
            [helm_path, "--kubeconfig", str(cluster.kubeconfig), "uninstall", deployment.release,
             "--namespace", deployment.operator_namespace, "--wait", "--timeout", "60s"],
            capture_output=True, check=False,
        )  # fmt: skip
        runner.terminate()
        runner.wait(60)
        runner_log.close()
        cluster.kubectl(
            "delete", "namespace", deployment.operator_namespace, "--wait=false", check=False
        )
        smtp.stop()
