"""A handle on a running cluster for tests and tools: kubectl, clients and environment."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from blacklist_devtools.net import free_port, wait_for_port


class KubectlError(subprocess.CalledProcessError):
    """kubectl exited with an error; the message names the command and carries its stderr."""

    def __str__(self) -> str:
        command = " ".join(str(part) for part in self.cmd[3:])  # without the path and kubeconfig
        return f"kubectl {command} failed: {str(self.stderr or '').strip()}"


def run_kubectl(
    kubectl_path: str,
    kubeconfig: Path,
    *arguments: str,
    input: str | None = None,
    check: bool = True,
) -> str:
    """Run kubectl with ``kubeconfig``; return its stdout, raise :class:`KubectlError` if asked."""
    completed = subprocess.run(
        [kubectl_path, "--kubeconfig", str(kubeconfig), *arguments],
        input=input,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and completed.returncode != 0:
        raise KubectlError(completed.returncode, completed.args, completed.stdout, completed.stderr)
    return completed.stdout


@dataclass(frozen=True)
class Cluster:
    """Where a cluster is and how to talk to it as its admin."""

    kubeconfig: Path
    server: str
    kubectl_path: str

    @property
    def env(self) -> dict[str, str]:
        """The current environment with ``KUBECONFIG`` pointing at this cluster."""
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *arguments: str, input: str | None = None, check: bool = True) -> str:
        """Run kubectl and return its stdout; raise (with stderr) when it fails and ``check``."""
        return run_kubectl(self.kubectl_path, self.kubeconfig, *arguments, input=input, check=check)

    def api_client(self) -> client.ApiClient:
        """A Kubernetes Python client for this cluster."""
        api: client.ApiClient = config.new_client_from_config(config_file=str(self.kubeconfig))
        return api


@contextlib.contextmanager
def port_forward(cluster: Cluster, namespace: str, target: str, remote_port: int) -> Iterator[int]:
    """Run ``kubectl port-forward`` to ``target`` (``svc/NAME``); yield the local port."""
    local_port = free_port()
    forward = subprocess.Popen(
        [cluster.kubectl_path, "--kubeconfig", str(cluster.kubeconfig), "-n", namespace,
         "port-forward", target, f"{local_port}:{remote_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port("127.0.0.1", local_port, 30)
        yield local_port
    finally:
        forward.terminate()
        forward.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true (return True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
