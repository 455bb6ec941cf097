"""The local pod runner: runs this product's pods as local processes, as a kubelet would.

Under kwok no container runs, so this runner watches the pods bound to the
fake node and, for each container whose image belongs to this product (the
service, the operator, PostgreSQL), starts the matching local program:

* **environment** from the pod spec — ``env`` (values, ConfigMap and Secret
  keys, the downward API), ``envFrom``, ``$(VAR)`` expansion — plus the
  ``KUBERNETES_SERVICE_HOST``/``PORT`` a kubelet injects;
* **volumes** — ConfigMaps, Secrets, ``emptyDir``, projected ServiceAccount
  tokens (requested with TokenRequest, bound to the pod) and PersistentVolume
  ``hostPath`` directories — bind-mounted at their ``mountPath`` in a private
  mount namespace per container;
* **identity** — each container gets its own UTS namespace with the pod's name as
  hostname, as in a pod;
* **networking** — each pod gets its own loopback address (10.244.a.b →
  127.244.a.b) and an ``/etc/hosts`` that resolves Service names to the
  address of a ready pod behind them (the stand-in for cluster DNS and
  kube-proxy);
* **health** — readiness probes are run and the pod's ``Ready`` condition is
  patched to match; a program that exits is restarted with back-off.

It is development tooling, not part of the product. It does not emulate
resource limits, user IDs, read-only root filesystems, network policies or
image contents: the programs are this repository's code and Debian's
PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config

from blacklist_devtools.net import port_is_open
from blacklist_devtools.podspec import (
    PodSpecError,
    Program,
    container_env,
    decode_secret,
    expand,
    hosts_file,
    local_address,
    program_for,
    selector_matches,
)

logger = logging.getLogger("podrunner")
REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = re.compile(r"(?<![\w.])(127\.0\.0\.1|localhost)(?![\w.])")
TOKEN_LIFETIME = 3600
TOKEN_REFRESH = 1800
SHIM = ("unshare", "--mount", "--uts", "--propagation", "private", "--",
        sys.executable, "-m", "blacklist_devtools.podshim")  # fmt: skip


@dataclass
class Container:
    """One running (or restarting) container program."""

    name: str
    program: Program
    plan: Path
    log: Path
    probe: dict[str, Any] | None
    env: dict[str, str]
    spec: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    ready: bool = False
    next_probe: float = 0.0


@dataclass
class PodRun:
    """What the runner keeps for one pod."""

    uid: str
    namespace: str
    name: str
    address: str
    directory: Path
    labels: dict[str, str]
    containers: list[Container] = field(default_factory=list)
    ready: bool | None = None
    token_written: float = 0.0
    token_sources: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)


def container_port(spec: dict[str, Any], port: int | str) -> int:
    """Resolve a probe's port, which may name one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in spec.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise PodSpecError(f"container {spec['name']} has no port named {port}")


class PodRunner:
    """Reconciles local processes with the pods bound to the kwok node."""

    def __init__(self, api: client.ApiClient, state_dir: Path, api_port: int) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.state_dir = state_dir
        self.api_port = api_port
        self.pods: dict[str, PodRun] = {}
        self.waiting: dict[str, str] = {}

    # -- lookups ---------------------------------------------------------------------------

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data, or None if it does not exist."""
        try:
            found = self.core.read_namespaced_config_map(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return dict(found.data or {})

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's decoded data, or None if it does not exist."""
        try:
            found = self.core.read_namespaced_secret(name, namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        return decode_secret(found.data)

    def token(self, pod: dict[str, Any], audiences: list[str] | None, seconds: int) -> str:
        """A ServiceAccount token bound to the pod (TokenRequest)."""
        metadata = pod["metadata"]
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": audiences,
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        account = pod["spec"].get("serviceAccountName") or "default"
        response = self.core.create_namespaced_service_account_token(
            account, metadata["namespace"], body
        )
        return str(response.status.token)

    # -- volumes ---------------------------------------------------------------------------

    def _write_files(self, directory: Path, files: dict[str, str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for relative, content in files.items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(content)
            partial.replace(path)

    @staticmethod
    def _select(data: dict[str, str], items: list[dict[str, Any]] | None) -> dict[str, str]:
        if not items:
            return dict(data)
        return {item["path"]: data[item["key"]] for item in items if item["key"] in data}

    def materialise_volume(self, pod: dict[str, Any], run: PodRun, volume: dict[str, Any]) -> Path:
        """Make a volume's content exist on disk and return its directory."""
        namespace = run.namespace
        target = run.directory / "volumes" / str(volume["name"])
        if "configMap" in volume:
            source = volume["configMap"]
            data = self.config_map(namespace, source["name"])
            if data is None:
                if not source.get("optional"):
                    raise PodSpecError(f"ConfigMap {source['name']} not found")
                data = {}
            self._write_files(target, self._select(data, source.get("items")))
        elif "secret" in volume:
            source = volume["secret"]
            data = self.secret(namespace, source["secretName"])
            if data is None:
                if not source.get("optional"):
                    raise PodSpecError(f"Secret {source['secretName']} not found")
                data = {}
            self._write_files(target, self._select(data, source.get("items")))
            target.chmod(0o700)
        elif "emptyDir" in volume:
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o777)
        elif "persistentVolumeClaim" in volume:
            claim = self.core.read_namespaced_persistent_volume_claim(
                volume["persistentVolumeClaim"]["claimName"], namespace
            )
            if not claim.spec.volume_name or claim.status.phase != "Bound":
                raise PodSpecError(f"PersistentVolumeClaim {claim.metadata.name} is not bound")
            persistent = self.core.read_persistent_volume(claim.spec.volume_name)
            if persistent.spec.host_path is None:
                raise PodSpecError(f"PersistentVolume {persistent.metadata.name} is not hostPath")
            volume_path = Path(str(persistent.spec.host_path.path))
            volume_path.mkdir(parents=True, exist_ok=True)
            return volume_path
        elif "hostPath" in volume:
            host_path = Path(volume["hostPath"]["path"])
            host_path.mkdir(parents=True, exist_ok=True)
            return host_path
        elif "projected" in volume:
            files: dict[str, str] = {}
            for source in volume["projected"].get("sources", []):
                if "serviceAccountToken" in source:
                    token_source = source["serviceAccountToken"]
                    run.token_sources.append((target / token_source["path"], token_source))
                    files[token_source["path"]] = self.token(
                        pod,
                        [token_source["audience"]] if token_source.get("audience") else None,
                        max(TOKEN_LIFETIME, int(token_source.get("expirationSeconds", 0))),
                    )
                elif "configMap" in source:
                    data = self.config_map(namespace, source["configMap"]["name"]) or {}
                    files.update(self._select(data, source["configMap"].get("items")))
                elif "secret" in source:
                    data = self.secret(namespace, source["secret"]["name"]) or {}
                    files.update(self._select(data, source["secret"].get("items")))
                elif "downwardAPI" in source:
                    for item in source["downwardAPI"].get("items", []):
                        field_path = item["fieldRef"]["fieldPath"]
                        namespace_asked = field_path == "metadata.namespace"
                        value = pod["metadata"]["namespace"] if namespace_asked else ""
                        files[item["path"]] = value
            self._write_files(target, files)
            run.token_written = time.monotonic()
        else:
            raise PodSpecError(f"volume {volume['name']} has an unsupported type")
        return target

    # -- pods ------------------------------------------------------------------------------

    def start_pod(self, pod: dict[str, Any]) -> None:
        """Prepare a pod's volumes and start each of its known containers."""
        metadata = pod["metadata"]
        address = local_address(pod["status"]["podIP"])
        directory = self.state_dir / f"{metadata['namespace']}_{metadata['name']}"
        shutil.rmtree(directory / "volumes", ignore_errors=True)
        run = PodRun(
            uid=metadata["uid"],
            namespace=metadata["namespace"],
            name=metadata["name"],
            address=address,
            directory=directory,
            labels=dict(metadata.get("labels") or {}),
        )
        (directory / "run").mkdir(parents=True, exist_ok=True)
        (directory / "hosts").write_text(f"127.0.0.1 localhost\n{address} {run.name}\n")
        volumes = {
            volume["name"]: self.materialise_volume(pod, run, volume)
            for volume in pod["spec"].get("volumes") or []
        }
        service_env = {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(self.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.api_port),
            "HOSTNAME": run.name,
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(directory),
            # The pod's "network namespace": the address its servers bind to.
            "BLACKLIST_POD_ADDRESS": address,
            "BIND_ADDRESS": address,
        }
        for spec in pod["spec"]["containers"]:
            env = container_env(pod, spec, address, self.config_map, self.secret, service_env)
            args = [expand(str(argument), env) for argument in spec.get("args") or []]
            program = program_for(spec["image"], args)
            if program is None:
                logger.info("Not running %s/%s container %s: unknown image %s",
                            run.namespace, run.name, spec["name"], spec["image"])  # fmt: skip
                continue
            mounts = [
                {"source": str(directory / "hosts"), "target": "/etc/hosts", "readOnly": True},
                {"source": str(directory / "run"), "target": "/run/postgresql"},
            ]
            for mount in spec.get("volumeMounts") or []:
                source = volumes[mount["name"]]
                if mount.get("subPath"):
                    source = source / mount["subPath"]
                    if not source.exists():
                        source.mkdir(parents=True)
                mounts.append(
                    {
                        "source": str(source),
                        "target": mount["mountPath"],
                        "readOnly": bool(mount.get("readOnly", False)),
                    }
                )
            plan = directory / f"{spec['name']}.plan.json"
            plan.write_text(
                json.dumps(
                    {
                        "mounts": mounts,
                        "argv": list(program.argv),
                        "env": env,
                        # A pod's hostname is its name (at most 63 characters), in /etc/hosts.
                        "hostname": run.name[:63],
                        "preserve": sorted({str(REPO_ROOT), sys.prefix, sys.base_prefix}),
                    }
                )
            )
            plan.chmod(0o600)
            container = Container(
                name=spec["name"],
                program=program,
                plan=plan,
                log=directory / f"{spec['name']}.log",
                probe=spec.get("readinessProbe"),
                env=env,
                spec=spec,
            )
            run.containers.append(container)
            self.launch(run, container)
        self.pods[run.uid] = run
        logger.info("Started pod %s/%s at %s", run.namespace, run.name, address)

    def launch(self, run: PodRun, container: Container) -> None:
        """Start one container's program in its own mount namespace."""
        argv = [*SHIM, str(container.plan)]
        with container.log.open("ab") as log:
            container.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        # The program's PID (unshare and the shim exec into it), for fault tests.
        container.log.with_suffix(".pid").write_text(str(container.process.pid))
        logger.info("Started container %s of %s/%s (pid %d)",
                    container.name, run.namespace, run.name, container.process.pid)  # fmt: skip

    def stop_pod(self, run: PodRun, grace: float = 10.0) -> None:
        """SIGTERM every container's process group, SIGKILL what is left after ``grace``."""
        for container in run.containers:
            if container.process is not None and container.process.poll() is None:
                os.killpg(container.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for container in run.containers:
            process = container.process
            if process is None:
                continue
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.pods.pop(run.uid, None)
        logger.info("Stopped pod %s/%s", run.namespace, run.name)

    def probe(self, run: PodRun, container: Container) -> bool:
        """Run a container's readiness probe; no probe means ready while it runs."""
        if container.process is None or container.process.poll() is not None:
            container.ready, container.next_probe = False, 0.0
            return False
        now = time.monotonic()
        if now < container.next_probe:
            return container.ready
        try:
            container.ready = self._probe(run, container)
        except PodSpecError as error:
            logger.warning(
                "Probe of %s in %s/%s: %s", container.name, run.namespace, run.name, error
            )
            container.ready = False
        # As the kubelet: every periodSeconds once ready; until then at every pass, so
        # a starting pod is seen ready at once.
        period = float((container.probe or {}).get("periodSeconds", 10))
        container.next_probe = now + period if container.ready else 0.0
        return container.ready

    def _probe(self, run: PodRun, container: Container) -> bool:
        probe = container.probe
        if not probe:
            return True
        if "httpGet" in probe:
            get = probe["httpGet"]
            port = container_port(container.spec, get["port"])
            url = f"http://{run.address}:{port}{get.get('path', '/')}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return 200 <= int(response.status) < 400
            except (urllib.error.URLError, OSError):
                return False
        if "tcpSocket" in probe:
            return port_is_open(
                run.address, container_port(container.spec, probe["tcpSocket"]["port"])
            )
        if "exec" in probe:
            # Loopback inside a pod is the pod itself: here, the pod's own address.
            command = [
                LOOPBACK.sub(run.address, expand(part, container.env))
                for part in probe["exec"]["command"]
            ]
            probe_plan = container.plan.with_suffix(".probe.json")
            if not probe_plan.exists():  # the pod spec, hence the command, never changes
                plan = json.loads(container.plan.read_text())
                probe_plan.write_text(json.dumps({**plan, "argv": command}))
                probe_plan.chmod(0o600)
            try:
                completed = subprocess.run(
                    [*SHIM, str(probe_plan)],
                    capture_output=True, timeout=10, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired:
                return False
            return completed.returncode == 0
        return True

    def set_ready(self, run: PodRun, ready: bool) -> None:
        """Patch the pod's Ready and ContainersReady conditions when they change."""
        if run.ready == ready:
            return
        status = "True" if ready else "False"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conditions = [
            {"type": kind, "status": status, "lastTransitionTime": now}
            | ({} if ready else {"reason": "ContainersNotReady"})
            for kind in ("Ready", "ContainersReady")
        ]
        try:
            self.core.patch_namespaced_pod_status(
                run.name, run.namespace, {"status": {"conditions": conditions}}
            )
        except client.ApiException as error:
            if error.status != 404:
                raise
        run.ready = ready
        logger.info("Pod %s/%s is %s", run.namespace, run.name, "ready" if ready else "not ready")

    def refresh_tokens(self, run: PodRun, pod: dict[str, Any]) -> None:
        """Rewrite projected tokens before they expire, as the kubelet does."""
        if not run.token_sources or time.monotonic() - run.token_written < TOKEN_REFRESH:
            return
        for path, source in run.token_sources:
            token = self.token(
                pod, [source["audience"]] if source.get("audience") else None, TOKEN_LIFETIME
            )
            partial = path.with_name(f".{path.name}.partial")
            partial.write_text(token)
            partial.replace(path)
        run.token_written = time.monotonic()

    def sync(self) -> None:
        """One pass: start new pods, stop gone ones, restart, probe, refresh hosts."""
        listed = self.core.list_pod_for_all_namespaces(field_selector="spec.nodeName=kwok-node-0")
        pods = {pod.metadata.uid: self.api.sanitize_for_serialization(pod)
                for pod in listed.items}  # fmt: skip
        for uid, run in list(self.pods.items()):
            pod = pods.get(uid)
            if pod is None or pod["metadata"].get("deletionTimestamp"):
                self.stop_pod(run)
        for uid, pod in pods.items():
            if uid in self.pods or pod["metadata"].get("deletionTimestamp"):
                continue
            if not pod.get("status", {}).get("podIP"):
                continue
            known = [
                c for c in pod["spec"]["containers"] if program_for(c["image"], []) is not None
            ]
            if not known:
                continue
            try:
                self.start_pod(pod)
                self.waiting.pop(uid, None)
            except PodSpecError as error:
                if self.waiting.get(uid) != str(error):
                    logger.info("Pod %s/%s waits: %s", pod["metadata"]["namespace"],
                                pod["metadata"]["name"], error)  # fmt: skip
                self.waiting[uid] = str(error)
        now = time.monotonic()
        for run in list(self.pods.values()):
            for container in run.containers:
                process = container.process
                if process is not None and process.poll() is not None:
                    container.restarts += 1
                    delay = min(10.0, 0.5 * 2 ** min(container.restarts, 5))
                    logger.warning("Container %s of %s/%s exited with %s; restart in %.1f s",
                                   container.name, run.namespace, run.name,
                                   process.returncode, delay)  # fmt: skip
                    container.process = None
                    container.next_start = now + delay
                if container.process is None and now >= container.next_start:
                    self.launch(run, container)
            self.set_ready(run, all(self.probe(run, c) for c in run.containers))
            self.refresh_tokens(run, pods[run.uid])
        self.write_hosts()

    def write_hosts(self) -> None:
        """Point every pod's /etc/hosts at the ready pods behind each Service."""
        services = [
            self.api.sanitize_for_serialization(service)
            for service in self.core.list_service_for_all_namespaces().items
        ]
        addresses: dict[tuple[str, str], str] = {}
        for service in services:
            namespace = service["metadata"]["namespace"]
            selector = service.get("spec", {}).get("selector")
            for run in sorted(self.pods.values(), key=lambda r: r.name):
                if (
                    run.namespace == namespace
                    and run.ready
                    and selector_matches(selector, run.labels)
                ):
                    addresses[(namespace, service["metadata"]["name"])] = run.address
                    break
        for run in self.pods.values():
            content = hosts_file(services, addresses, run.namespace, run.name, run.address)
            path = run.directory / "hosts"
            if path.read_text() != content:
                # Written in place: the file is bind-mounted, a rename would not be seen.
                with path.open("r+") as hosts:
                    hosts.write(content)
                    hosts.truncate()

    def stop_all(self) -> None:
        """Stop every pod's processes."""
        for run in list(self.pods.values()):
            self.stop_pod(run)


def main(argv: list[str] | None = None) -> None:
    """Run pods until SIGTERM, then stop them all."""
    parser = argparse.ArgumentParser(description="Run this product's kwok pods as local processes.")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.5)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    api = config.new_client_from_config(config_file=arguments.kubeconfig)
    api_port = int(api.configuration.host.rsplit(":", 1)[1])
    arguments.state_dir.mkdir(parents=True, exist_ok=True)
    runner = PodRunner(api, arguments.state_dir, api_port)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        while not stopping:
            try:
                runner.sync()
            except Exception:
                # The API server may be restarting; keep the pods running and retry.
                logger.exception("Sync pass failed")
            time.sleep(arguments.interval)
    finally:
        runner.stop_all()


if __name__ == "__main__":
    main()
