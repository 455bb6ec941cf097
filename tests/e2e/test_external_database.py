"""``spec.database.external`` on the real node: a PostgreSQL the team runs, restarted under load.

The test deploys a plain PostgreSQL itself (the project's PostgreSQL image, a
Deployment with its data on a PersistentVolumeClaim, and a ClusterIP Service),
not through the operator, then a BlacklistService with two replicas that uses
it through a Secret. The service pods run on the local node from the service
image, and the operator is the chart's, from the operator image: it reaches that
database by the Secret's host name through cluster DNS, as in production.

Then the external database is restarted (a new pod on the same claim and Service)
while clients hit ``/blacklisted``:
every hit must reach the external ledger once it is back, and bans keep
syncing to every replica within seconds.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from blacklist_devtools import cluster as local_cluster
from blacklist_devtools import images, stack
from blacklist_devtools.http import get
from blacklist_devtools.kube import Cluster, wait_until
from blacklist_devtools.network import client_address
from blacklist_service.config import DEFAULT_METRICS_PORT
from tests.operator.helpers import (
    apply_manifest,
    blacklist_service,
    condition,
    get_json,
    read_ledger_addresses,
    running_pods,
)

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "ext"
DATABASE = "team_ledger"
USER = "team_owner"
# Characters a URL would need escaped: the service takes the password from PGPASSWORD.
PASSWORD = "s3cret@with:odd/chars%"
DATABASE_LABELS = {"app": "team-postgres"}
READY_TIMEOUT = 240.0
# The figures of the restart (shown with --log-cli-level=INFO).
figures = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[stack.InstalledOperator]:
    """The operator as the chart installs it, from the image ``make images`` built."""
    with stack.installed_operator(
        cluster, local_cluster.binary("helm"), uuid.uuid4().hex[:6]
    ) as installed:
        yield installed


def team_postgres(namespace: str) -> list[dict[str, Any]]:
    """The team's own PostgreSQL: Secret, claim, Deployment and Service, all named team-postgres."""
    metadata = {"name": "team-postgres", "namespace": namespace, "labels": DATABASE_LABELS}
    secret_key = {"secretKeyRef": {"name": "pg", "key": "password"}}
    ready = {"exec": {"command": ["pg_isready", "-h", "127.0.0.1", "-U", USER, "-d", DATABASE]}}
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": metadata,
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": metadata,
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": DATABASE_LABELS},
                "template": {
                    "metadata": {"labels": DATABASE_LABELS},
                    "spec": {
                        "containers": [
                            {
                                "name": "postgres",
                                "image": images.reference("postgres"),
                                "imagePullPolicy": "IfNotPresent",
                                "env": [
                                    {"name": "POSTGRES_USER", "value": USER},
                                    {"name": "POSTGRES_PASSWORD", "valueFrom": secret_key},
                                    {"name": "POSTGRES_DB", "value": DATABASE},
                                    {"name": "PGDATA", "value": "/var/lib/postgresql/data/pg"},
                                ],
                                "ports": [{"name": "postgres", "containerPort": 5432}],
                                "readinessProbe": {**ready, "periodSeconds": 1},
                                "volumeMounts": [
                                    {"name": "data", "mountPath": "/var/lib/postgresql/data"}
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "data",
                                "persistentVolumeClaim": {"claimName": "team-postgres"},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": metadata,
            "spec": {
                "selector": DATABASE_LABELS,
                "ports": [{"name": "postgres", "port": 5432, "targetPort": "postgres"}],
            },
        },
    ]


def secret(namespace: str) -> dict[str, Any]:
    values = {
        "host": f"team-postgres.{namespace}.svc",
        "port": "5432",
        "username": USER,
        "password": PASSWORD,
        "dbname": DATABASE,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "pg", "namespace": namespace},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


class TeamDatabase:
    """The team's PostgreSQL as the test reaches it: through its Service's cluster IP."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        service = get_json(cluster, "service", "team-postgres", "-n", namespace) or {}
        self.host = str(service["spec"]["clusterIP"])

    def pods(self) -> list[dict[str, Any]]:
        return running_pods(self.cluster, self.namespace, "app=team-postgres")

    def ledger(self) -> list[str] | None:
        """Every ledger row's address, or None while the database cannot be read."""
        return read_ledger_addresses(self.host, USER, PASSWORD, DATABASE)


def service_urls(cluster: Cluster, namespace: str) -> list[str]:
    selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=service"
    pods = running_pods(cluster, namespace, selector)
    return sorted(f"http://{pod['status']['podIP']}:5004" for pod in pods)


def fully_up(cluster: Cluster, namespace: str, replicas: int) -> bool:
    """Ready, the operator connected and synced, every replica connected to the ledger."""
    body = get_json(cluster, "bls", NAME, "-n", namespace)
    kinds = ("Ready", "DatabaseReady", "BanListSynced")
    if not all(condition(body, kind).get("status") == "True" for kind in kinds):
        return False
    urls = service_urls(cluster, namespace)
    # The metrics are on the pod's METRICS_PORT (default 9090), not on the service's port.
    scrapes = [url.rsplit(":", 1)[0] + f":{DEFAULT_METRICS_PORT}/metrics" for url in urls]
    return len(urls) == replicas and all(
        "blacklist_ledger_connected 1.0" in get(scrape, timeout=2).body for scrape in scrapes
    )


def refused_everywhere(urls: list[str], source: str) -> bool:
    return all(get(f"{url}/?n=1", source=source, timeout=3).status == 403 for url in urls)


class Hitter(threading.Thread):
    """Hits ``/blacklisted`` from a new client address every ``pause`` seconds, round robin."""

    def __init__(self, urls: list[str], first: int, pause: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.next = first
        self.pause = pause
        self.answers: dict[str, int] = {}
        # monotonic time of each hit's answer
        self.times: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            source = client_address(self.next)
            url = self.urls[self.next % len(self.urls)]
            self.next += 1
            try:
                self.answers[source] = get(f"{url}/blacklisted", source=source, timeout=5).status
            except OSError:
                self.answers[source] = 0  # no answer at all: the test fails on it
            self.times[source] = time.monotonic()
            time.sleep(self.pause)

    def stop(self) -> dict[str, int]:
        self.stopping.set()
        self.join(30)
        return self.answers


def test_external_database_serves_bans_and_survives_its_restart(
    operator: stack.InstalledOperator, namespace: str
) -> None:
    cluster = operator.cluster
    apply_manifest(cluster, secret(namespace))
    for manifest in team_postgres(namespace):
        apply_manifest(cluster, manifest)
    assert wait_until(lambda: len(TeamDatabase(cluster, namespace).pods()) == 1, timeout=120)
    team = TeamDatabase(cluster, namespace)
    database = {"external": {"secretRef": {"name": "pg"}}}
    apply_manifest(cluster, blacklist_service(NAME, namespace, replicas=2, database=database))
    if not wait_until(lambda: fully_up(cluster, namespace, 2), timeout=READY_TIMEOUT, interval=1):
        body = get_json(cluster, "bls", NAME, "-n", namespace) or {}
        pytest.fail(f"not up: {body.get('status')}\n{operator.log()[-3000:]}")

    # No bundled database, no generated Secret: the children of an external database only.
    for kind, name in (
        ("deployment", f"{NAME}-postgres"),
        ("service", f"{NAME}-postgres"),
        ("persistentvolumeclaim", f"{NAME}-postgres"),
        ("networkpolicy", f"{NAME}-postgres"),
        ("secret", f"{NAME}-db"),
    ):
        assert get_json(cluster, kind, name, "-n", namespace) is None, f"{kind} {name}"
    selector = f"app.kubernetes.io/instance={NAME},app.kubernetes.io/component=database"
    assert running_pods(cluster, namespace, selector) == []
    settings = get_json(cluster, "configmap", f"{NAME}-db", "-n", namespace) or {}
    assert settings["data"]["host"] == f"team-postgres.{namespace}.svc"

    # A hit writes its row into the team's database (the service created the table there)
    # and the ban reaches the other replica.
    urls = service_urls(cluster, namespace)
    first = client_address(3000)
    assert get(f"{urls[0]}/blacklisted", source=first).status == 444
    assert wait_until(lambda: first in (team.ledger() or []), timeout=10)
    assert wait_until(lambda: refused_everywhere(urls, first), timeout=5, interval=0.1)

    # The team's database restarts (same Service, same data) while clients keep hitting:
    # scaled to 0, it stays away for a few seconds, then a new pod starts on the same claim.
    # (Scaling, not deleting the pod: a replacement must never start on the data directory
    # while the old server still stops.)
    hitter = Hitter(urls, first=3001)
    hitter.start()
    time.sleep(2)
    (old_pod,) = team.pods()
    scale = ("scale", "deployment/team-postgres", "-n", namespace)
    cluster.kubectl(*scale, "--replicas=0")

    def stopped() -> bool:
        pods = get_json(cluster, "pods", "-n", namespace, "-l", "app=team-postgres") or {}
        return not pods.get("items")

    assert wait_until(stopped, timeout=60, interval=0.2), "the old pod stopped"
    down = time.monotonic()
    time.sleep(5)
    cluster.kubectl(*scale, "--replicas=1")

    def restarted() -> bool:
        pods = team.pods()
        return len(pods) == 1 and pods[0]["metadata"]["uid"] != old_pod["metadata"]["uid"]

    assert wait_until(restarted, timeout=120, interval=0.2), "the team's database came back"
    back = time.monotonic()
    time.sleep(3)
    answers = hitter.stop()
    assert set(answers.values()) == {444}, answers
    during = [source for source, at in hitter.times.items() if down <= at <= back]
    assert len(during) >= 10, f"only {len(during)} hits while the database was down"

    # Every hit reaches the ledger, exactly once, none lost in the outage.
    def all_delivered() -> bool:
        rows = team.ledger()
        return rows is not None and set(answers) <= set(rows)

    assert wait_until(all_delivered, timeout=90, interval=1), (
        sorted(set(answers) - set(team.ledger() or [])),
        operator.log()[-2000:],
    )
    rows = team.ledger() or []
    assert sorted(rows) == sorted({first, *answers}), "a hit recorded twice"
    # Every hit of the outage reaches every replica's ban list through the ban sync.
    assert wait_until(
        lambda: all(refused_everywhere(urls, source) for source in answers), timeout=30
    )
    synced = time.monotonic() - back

    # After the restart a new ban reaches every replica within seconds.
    fresh = client_address(3999)
    started = time.monotonic()
    assert get(f"{urls[1]}/blacklisted", source=fresh).status == 444
    assert wait_until(lambda: refused_everywhere(urls, fresh), timeout=5, interval=0.05)
    fresh_seconds = time.monotonic() - started
    figures.info(
        "external database down for %.1f s; %d hits then, %d around it, all delivered once; "
        "every such ban on every replica %.1f s after the database was back (3 s of them "
        "still hitting); a new ban on every replica in %.2f s",
        back - down,
        len(during),
        len(answers),
        synced,
        fresh_seconds,
    )

    def counted() -> bool:
        body = get_json(cluster, "bls", NAME, "-n", namespace) or {}
        banned = int((body.get("status") or {}).get("bannedCount") or 0)
        return (
            condition(body, "DatabaseReady").get("status") == "True" and banned >= len(answers) + 2
        )

    assert wait_until(counted, timeout=30)
