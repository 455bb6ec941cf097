"""The product's whole path, driven as a user would: Helm, kubectl, real pods.

Shared by ``make demo``, the end-to-end tests and the benchmarks: install the
operator chart with Helm, apply a ``BlacklistService``, wait for it to be
``Ready``, and find where its pods (containers on the local node) listen.
"""

from __future__ import annotations

import base64
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2
import yaml

from blacklist_contract.tables import LEDGER_TABLE
from blacklist_devtools import images
from blacklist_devtools.http import answers, get
from blacklist_devtools.kube import Cluster
from blacklist_devtools.network import NODE_ADDRESS
from blacklist_devtools.release import CHART_NAME, Released
from blacklist_devtools.release_metadata import plain_http
from blacklist_devtools.smtp import SmtpServer
from blacklist_operator.builders.naming import POSTGRES_PORT, database_settings_name
from blacklist_operator.model.resource import parse
from blacklist_service.config import DEFAULT_METRICS_PORT

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "chart"
EXAMPLE = REPO_ROOT / "examples" / "blacklistservice.yaml"
READY_TIMEOUT = 240.0


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


def metrics_url(service_url: str) -> str:
    """The metrics of the replica at ``service_url``: its own port, which the Service omits."""
    return f"{service_url.rsplit(':', 1)[0]}:{DEFAULT_METRICS_PORT}/metrics"


def wait_ready(cluster: Cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """Wait until the BlacklistService is fully up for its current generation.

    Beyond ``Ready`` (every replica passed its readiness probe), this waits for
    the operator's own database connection and ban-list sync, and for every
    replica's own connection to the ledger, so that a hit is delivered at once.
    """
    deadline = time.monotonic() + timeout
    resource: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resource = get_json(cluster, "blacklistservice", name, "-n", namespace)
        generation = resource["metadata"].get("generation")
        observed = resource.get("status", {}).get("observedGeneration")
        conditions = [
            condition(resource, kind) for kind in ("Ready", "DatabaseReady", "BanListSynced")
        ]
        if observed == generation and all(c and c["status"] == "True" for c in conditions):
            urls = instance(cluster, namespace, name).service_urls
            # Each replica has reached the ledger too, so a hit is delivered at once.
            if (
                urls
                and all(answers(f"{url}/readyz") for url in urls)
                and all(
                    "blacklist_ledger_connected 1.0" in get(metrics_url(url), timeout=2).body
                    for url in urls
                )
            ):
                return resource
        time.sleep(0.5)
    raise TimeoutError(
        f"BlacklistService {namespace}/{name} not Ready in {timeout:.0f} s: "
        f"{json.dumps(resource.get('status', {}))}"
    )


def pod_addresses(cluster: Cluster, namespace: str, selector: str) -> list[str]:
    """Addresses of the live pods matching ``selector``, by pod name."""
    pods = get_json(cluster, "pods", "-n", namespace, "-l", selector)["items"]
    named = sorted(
        (pod["metadata"]["name"], pod["status"]["podIP"])
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


def ledger_rows(found: Instance) -> list[tuple[str, str]]:
    """(path, ip_address) of every row of the instance's ledger, in row order."""
    with (
        psycopg2.connect(
            host=found.database_address,
            port=POSTGRES_PORT,
            user=found.database_user,
            password=found.database_password,
            dbname=found.database_name,
        ) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(f"SELECT path, ip_address FROM {LEDGER_TABLE} ORDER BY id")  # noqa: S608
        return [(str(path), str(address)) for path, address in cursor.fetchall()]


def instance(cluster: Cluster, namespace: str, name: str) -> Instance:
    """Describe a ready BlacklistService: its replicas' URLs and its database."""
    bls = parse(get_json(cluster, "blacklistservice", name, "-n", namespace))
    port = bls.spec.port
    service_selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=service"
    database_selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component=database"
    urls = [
        f"http://{address}:{port}"
        for address in pod_addresses(cluster, namespace, service_selector)
    ]
    database = pod_addresses(cluster, namespace, database_selector)[0]
    user = secret_value(cluster, namespace, database_settings_name(bls), "username")
    password = secret_value(cluster, namespace, database_settings_name(bls), "password")
    database_name = bls.spec.database.name
    return Instance(
        namespace=namespace,
        name=name,
        service_urls=urls,
        database_url=f"postgresql://{user}:{password}@{database}:{POSTGRES_PORT}/{database_name}",
        database_address=database,
        database_user=user,
        database_password=password,
        database_name=database_name,
    )


@dataclass
class Deployed:
    """The product as deployed by :func:`deploy`."""

    cluster: Cluster
    helm_path: str
    release: str
    operator_namespace: str
    namespace: str
    name: str
    smtp: SmtpServer

    def instance(self) -> Instance:
        """Where the ready instance listens now."""
        return instance(self.cluster, self.namespace, self.name)

    def resource(self) -> dict[str, Any]:
        """The BlacklistService as the API has it."""
        return get_json(self.cluster, "blacklistservice", self.name, "-n", self.namespace)


# The chart installs the CRD, which is cluster-wide: the tests apply crds/ with kubectl, and
# several releases share the test bed's cluster, so each install takes the CRD over (crds.keep
# leaves it in place when a release is uninstalled).
TAKE_OWNERSHIP = "--take-ownership"


def install_published(
    cluster: Cluster,
    helm_path: str,
    release: str,
    namespace: str,
    published: Released,
    *arguments: str,
) -> None:
    """``helm upgrade --install`` the chart ``published`` pushed, from its OCI registry.

    As the release prints it, with ``arguments`` added; waits for the operator.
    """
    helm(
        cluster, helm_path, "upgrade", "--install", release,
        f"oci://{published.registry}/charts/{CHART_NAME}", "--version", published.version,
        *(["--plain-http"] if plain_http(published.registry) else []),
        "--namespace", namespace, "--create-namespace", "--wait", "--timeout", "180s",
        TAKE_OWNERSHIP, *arguments,
    )  # fmt: skip


def default_image_values() -> list[str]:
    """Helm ``--set`` arguments: the test bed's service and PostgreSQL images as the defaults.

    The operator runs them for a resource that names no image, as ``make images`` built them.
    """
    return [
        "--set", f"defaults.serviceImage={images.reference('service')}",
        "--set", f"defaults.databaseImage={images.reference('postgres')}",
    ]  # fmt: skip


def operator_image_values() -> list[str]:
    """Helm ``--set`` arguments that run the images ``make images`` built.

    The operator's own, and the service's and PostgreSQL's as its defaults.
    """
    repository, tag, digest = images.parts("operator")
    return [
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"image.digest={digest}", *default_image_values(),
    ]  # fmt: skip


def example_resource(
    namespace: str, smtp_host: str, smtp_port: int, replicas: int | None = None
) -> dict[str, Any]:
    """``examples/blacklistservice.yaml`` for the local node.

    Alerts go to the SMTP server given; the database runs the locally built
    PostgreSQL image.
    """
    resource: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    resource["metadata"]["namespace"] = namespace
    resource["spec"].setdefault("database", {})["image"] = images.reference("postgres")
    mail = resource["spec"].setdefault("mail", {})
    mail.update({"host": smtp_host, "port": smtp_port})
    mail.pop("secretRef", None)
    if replicas is not None:
        resource["spec"]["replicas"] = replicas
    return resource


@dataclass(frozen=True)
class InstalledOperator:
    """The operator as the chart installed it: a release in a namespace of its own."""

    cluster: Cluster
    helm_path: str
    release: str
    namespace: str

    def log(self) -> str:
        """Everything the operator's pods logged so far."""
        return self.cluster.kubectl(
            "logs", "-n", self.namespace, "--tail=-1", "--prefix",
            "-l", f"app.kubernetes.io/instance={self.release}", check=False,
        )  # fmt: skip


@contextlib.contextmanager
def installed_operator(
    cluster: Cluster, helm_path: str, suffix: str, watch: Sequence[str] = ()
) -> Iterator[InstalledOperator]:
    """``helm install`` the chart with the image ``make images`` built; uninstall on exit.

    With ``watch`` (namespaces that exist), the operator serves only those, so it
    never serves what other tests or benches on the same cluster create; without,
    every namespace, as the chart's default.
    """
    scope = ["--set", f"operator.watchNamespaces={{{','.join(watch)}}}"] if watch else []
    installed = InstalledOperator(
        cluster, helm_path, f"blacklist-{suffix}", f"blacklist-operator-{suffix}"
    )
    try:
        helm(
            cluster, helm_path, "install", installed.release, str(CHART),
            "--namespace", installed.namespace, "--create-namespace",
            "--wait", "--timeout", "120s", TAKE_OWNERSHIP, *operator_image_values(), *scope,
        )  # fmt: skip
        yield installed
    finally:
        subprocess.run(
            [helm_path, "--kubeconfig", str(cluster.kubeconfig), "uninstall", installed.release,
             "--namespace", installed.namespace, "--wait", "--timeout", "60s"],
            capture_output=True, check=False,
        )  # fmt: skip
        cluster.kubectl("delete", "namespace", installed.namespace, "--wait=false", check=False)


@contextlib.contextmanager
def deploy(
    cluster: Cluster, helm_path: str, work: Path, replicas: int | None = None
) -> Iterator[Deployed]:
    """Install the chart, apply the example and wait until it is Ready.

    The SMTP server listens on the node's address, where the pods reach it.
    Everything is undone on exit: the namespaces are deleted, the release is
    uninstalled, the SMTP server stops.
    """
    suffix = uuid.uuid4().hex[:6]
    smtp = SmtpServer(mailbox=work / "mailbox", host=NODE_ADDRESS)
    smtp.start()
    deployment = Deployed(
        cluster=cluster,
        helm_path=helm_path,
        release=f"blacklist-{suffix}",
        operator_namespace=f"blacklist-operator-{suffix}",
        namespace=f"blacklist-{suffix}",
        name="",
        smtp=smtp,
    )
    operator = contextlib.ExitStack()
    try:
        cluster.kubectl("create", "namespace", deployment.namespace)
        watch = [deployment.namespace]
        operator.enter_context(installed_operator(cluster, helm_path, suffix, watch))
        resource = example_resource(deployment.namespace, smtp.host, smtp.port, replicas)
        deployment.name = resource["metadata"]["name"]
        cluster.kubectl("apply", "-f", "-", input=json.dumps(resource))
        wait_ready(cluster, deployment.namespace, deployment.name, READY_TIMEOUT)
        yield deployment
    finally:
        cluster.kubectl("delete", "namespace", deployment.namespace, "--wait=false", check=False)
        operator.close()  # after its resources: it removes their finalizers
        smtp.stop()
