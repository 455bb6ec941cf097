"""What the operator applies is what the API server keeps: no child reads back as drifted.

The drift watchers rebuild each child from the resource and compare it with
the child's events (``builders.drift.contains``). A field the API server drops
or rewrites on the way in (an empty ``value``, a defaulted quantity) would read
as drift on every event of that child, and each would cost a full reconcile:
hundreds of needless writes per resource while its pods start. Here every
child of a plain resource and of one with every knob set goes through a
server-side dry-run apply, and what the server answers must still contain it.
"""

from __future__ import annotations

import base64
import json
import pathlib
from typing import Any

import pytest
import yaml

from blacklist_devtools.kube import Cluster
from blacklist_operator.builders import build_children, child_key, contains
from blacklist_operator.model.external import ExternalDatabase, parse_database_secret
from blacklist_operator.model.resource import parse

pytestmark = [pytest.mark.cluster]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def production_spec() -> dict[str, Any]:
    """The spec of examples/production.yaml (every knob), without the storage it names."""
    example = yaml.safe_load((REPO_ROOT / "examples" / "production.yaml").read_text())
    return dict(example["spec"])


SPECS = {
    "defaults": {},
    "production example": production_spec(),
    "odd quantities": {
        "replicas": 3,
        "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}, "limits": {"cpu": "1000m"}},
        "trustedProxies": ["10.0.0.0/8", "fd00::/8"],
        "banDuration": "1d12h",
        "workers": 3,
    },
    "external database": {"database": {"external": {"secretRef": {"name": "pg"}}}},
    "cluster ip": {"service": {"type": "ClusterIP"}, "metrics": {"serviceMonitor": True}},
    "load balancer": {"service": {"type": "LoadBalancer"}},
}


def external_database(body: dict[str, Any]) -> ExternalDatabase | None:
    """The parsed Secret of an external database, as the reconcile reads it (None: bundled)."""
    bls = parse(body)
    if bls.spec.database.external is None:
        return None
    fields = {"host": "pg.db.svc", "port": "5432", "username": "u", "password": "p@ss:/%"}
    data = {key: base64.b64encode(value.encode()).decode() for key, value in fields.items()}
    return parse_database_secret(bls.spec.database.external, "denied_access", {"data": data})


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_every_child_reads_back_as_it_was_built(
    cluster: Cluster, namespace: str, spec: dict[str, Any]
) -> None:
    body = {
        "apiVersion": "blacklist.dev/v1",
        "kind": "BlacklistService",
        "metadata": {"name": "bls", "namespace": namespace, "uid": "0" * 8, "generation": 1},
        "spec": spec,
    }
    drifted = []
    children = build_children(
        parse(body), "blacklist-system", "uid-of-the-secret", None, external_database(body)
    )
    assert {child_key(child)[0] for child in children} >= {"Deployment", "Service", "ConfigMap"}
    for child in children:
        if child["kind"] == "PersistentVolume":
            continue  # cluster-scoped, and built only for hostPath storage
        answer = cluster.kubectl(
            "apply", "--server-side", "--dry-run=server", "--field-manager=drift-test",
            "-o", "json", "-f", "-", input=json.dumps(child),
        )  # fmt: skip
        if not contains(json.loads(answer), child):
            drifted.append(child_key(child))
    assert drifted == []
