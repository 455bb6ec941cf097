"""The product's whole path, driven as a user would: Helm, kubectl, the pod runner.

Shared by ``make demo`` and the end-to-end tests: install the operator chart
with Helm, apply a ``BlacklistService``, wait for it to be ``Ready``, and find
where its pods (run locally by the pod runner) listen.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from blacklist_devtools.kube import Cluster
from blacklist_devtools.podspec import local_address


def helm(cluster: Cluster, helm_path: str, *arguments: str) -> str:
    """Run helm against ``cluster``; raise with helm's message when it fails."""
    completed = subprocess.run(
        [helm_path, "--kubeconfig", str(cluster.kubeconfig), *arguments],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"helm {' '.join(arguments)} failed: {completed.stderr.strip()}")
    return completed.stdout


def condition(resource: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind``, if the resource has one."""
    for entry in resource.get("status", {}).get("conditions", []):
        if entry.get("type") == kind:
            found: dict[str, Any] = entry
            return found
    return None


def get_json(cluster: Cluster, *arguments: str) -> dict[str, Any]:
    """``kubectl get ... -o json`` as a dict."""
    found: dict[str, Any] = json.loads(cluster.kubectl("get", *arguments, "-o", "json"))
    return found


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """Wait until the BlacklistService is Ready=True for its current generation."""
    deadline = time.monotonic() + timeout
    resource: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resource = get_json(cluster, "blacklistservice", name, "-n", namespace)
        ready = condition(resource, "Ready")
        generation = resource["metadata"].get("generation")
        observed = resource.get("status", {}).get("observedGeneration")
        if ready is not None and ready["status"] == "True" and observed == generation:
            return resource
        time.sleep(0.5)
    raise TimeoutError(
        f"BlacklistService {namespace}/{name} not Ready in {timeout:.0f} s: "
        f"{json.dumps(resource.get('status', {}))}"
    )


def pod_addresses(cluster: Cluster, namespace: str, selector: str) -> list[str]:
    """Local addresses (127.244.x.y) of the live pods matching ``selector``, by pod name."""
    pods = get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]
    named = sorted(
        (pod["metadata"]["name"], local_address(pod["status"]["podIP"]))
        for pod in pods
        if pod["status"].get("podIP") and not pod["metadata"].get("deletionTimestamp")
    )
    return [address for _, address in named]


def secret_value(cluster: Cluster, namespace: str, name: str, key: str) -> str:
    """One decoded key of a Secret."""
    encoded = cluster.kubectl(
        "get", "secret", name, "-n", namespace, "-o", f"jsonpath={{.data.{key}}}"
    )
    return base64.b64decode(encoded).decode()


@dataclass(frozen=True)
class Instance:
    """Where a ready BlacklistService can be reached."""

    namespace: str
    name: str
    service_urls: Sequence[str]
    database_url: str
    database_address: str
    database_user: str
    database_password: str
    database_name: str


def instance(cluster: Cluster, namespace: str, name: str) -> Instance:
    """Describe a ready BlacklistService: its replicas' URLs and its database."""
    resource = get_json(cluster, "blacklistservice", name, "-n", namespace)
    port = int(resource["spec"].get("port", 5004))
    service_selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=service"
    database_selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=database"
    urls = [
        f"http://{address}:{port}"
        for address in pod_addresses(cluster, namespace, service_selector)
    ]
    database = pod_addresses(cluster, namespace, database_selector)[0]
    user = secret_value(cluster, namespace, f"{name}-db", "username")
    password = secret_value(cluster, namespace, f"{name}-db", "password")
    database_name = str(resource["spec"].get("database", {}).get("name", "denied_access"))
    return Instance(
        namespace=namespace,
        name=name,
        service_urls=urls,
        database_url=f"postgresql://{user}:{password}@{database}:5432/{database_name}",
        database_address=database,
        database_user=user,
        database_password=password,
        database_name=database_name,
    )
