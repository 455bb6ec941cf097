"""The CRD's schema rejects invalid specs at ``kubectl apply``, naming the field."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from blacklist_devtools.kube import Cluster, wait_until
from tests.operator.helpers import (
    CRD,
    apply_manifest,
    blacklist_service,
    get_json,
    install_crd,
)

pytestmark = pytest.mark.cluster

INVALID_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"replicas": -1}, "spec.replicas"),
    ({"replicas": "two"}, "spec.replicas"),
    ({"port": 0}, "spec.port"),
    ({"port": 70000}, "spec.port"),
    ({"port": 9090}, "spec.port"),
    ({"nodePort": 80}, "spec.nodePort"),
    ({"nodePort": 32768}, "spec.nodePort"),
    ({"nodePort": 30911, "service": {"type": "ClusterIP"}}, "spec.nodePort"),
    ({"service": {"type": "ExternalName"}}, "spec.service.type"),
    ({"image": ""}, "spec.image"),
    ({"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ({"allowlist": ["10.0.0.0/33"]}, "spec.allowlist"),
    ({"allowlist": ["example.com"]}, "spec.allowlist"),
    ({"trustedProxies": ["1.2.3"]}, "spec.trustedProxies"),
    ({"mail": {"recipient": "not-an-address"}}, "spec.mail.recipient"),
    ({"mail": {"port": 0}}, "spec.mail.port"),
    ({"mail": {"tls": True, "ssl": True}}, "spec.mail"),
    ({"mail": {"secretRef": {"name": "creds"}}}, "spec.mail"),
    ({"mail": {"secretRef": {"name": "Bad_Name"}, "host": "smtp"}}, "spec.mail.secretRef.name"),
    ({"database": {"name": "drop table"}}, "spec.database.name"),
    ({"database": {"storage": {"size": "0"}}}, "spec.database.storage.size"),
    ({"database": {"storage": {"size": "lots"}}}, "spec.database.storage.size"),
    ({"database": {"storage": {"hostPath": "relative/dir"}}}, "spec.database.storage.hostPath"),
    ({"database": {"storage": {"hostPath": "/a/../b"}}}, "spec.database.storage.hostPath"),
    (
        {"database": {"storage": {"hostPath": "/data", "storageClassName": "standard"}}},
        "spec.database.storage",
    ),
    ({"resources": {"requests": {"memory": "lots"}}}, "spec.resources.requests.memory"),
    ({"banDuration": "24 hours"}, "spec.banDuration"),
    ({"banDuration": "-1h"}, "spec.banDuration"),
    ({"banDuration": "0s"}, "spec.banDuration"),
    ({"banDuration": "0d0h"}, "spec.banDuration"),
    ({"banDuration": "3651d"}, "spec.banDuration"),
    ({"banDuration": "3650d1s"}, "spec.banDuration"),
    ({"banDuration": "9999999d"}, "spec.banDuration"),
    ({"banPrefixLengths": {"ipv4": 0}}, "spec.banPrefixLengths.ipv4"),
    ({"banPrefixLengths": {"ipv4": 33}}, "spec.banPrefixLengths.ipv4"),
    ({"banPrefixLengths": {"ipv6": 129}}, "spec.banPrefixLengths.ipv6"),
    ({"workers": 0}, "spec.workers"),
    ({"logFormat": "logfmt"}, "spec.logFormat"),
    ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "spec.autoscaling"),
    ({"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas"),
    ({"ingress": {"host": "Not A Host"}}, "spec.ingress.host"),
    ({"disruption": {"maxUnavailable": -1}}, "spec.disruption.maxUnavailable"),
    (
        {"database": {"external": {"secretRef": {"name": "pg"}, "sslmode": "x"}}},
        "spec.database.external.sslmode",
    ),
    ({"database": {"backup": {"retention": 3}}}, "spec.database.backup.schedule"),
    ({"database": {"backup": {"schedule": "daily"}}}, "spec.database.backup.schedule"),
    (
        {"database": {"backup": {"schedule": "@daily", "retention": 0}}},
        "spec.database.backup.retention",
    ),
    (
        {"database": {"backup": {"schedule": "@daily", "retention": 366}}},
        "spec.database.backup.retention",
    ),
    (
        {"database": {"backup": {"schedule": "@daily", "storage": {"size": "0"}}}},
        "spec.database.backup.storage.size",
    ),
    (
        {"database": {"backup": {"schedule": "@daily"}, "external": {"secretRef": {"name": "pg"}}}},
        "back up your external database yourself",
    ),
]


@pytest.mark.parametrize(
    ("spec", "field_path"), INVALID_SPECS, ids=[path for _, path in INVALID_SPECS]
)
def test_invalid_spec_is_rejected_naming_the_field(
    crd: Cluster, namespace: str, spec: dict[str, Any], field_path: str
) -> None:
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        apply_manifest(crd, blacklist_service("bad", namespace, **spec))
    assert field_path in rejected.value.stderr
    assert get_json(crd, "bls", "bad", "-n", namespace) is None


def test_defaults_are_filled_in(crd: Cluster, namespace: str) -> None:
    apply_manifest(crd, blacklist_service("defaults", namespace, local=False))
    body = get_json(crd, "bls", "defaults", "-n", namespace)
    assert body is not None
    spec = body["spec"]
    assert (spec["replicas"], spec["port"]) == (1, 5004)
    # No image is written into the resource: the operator's default applies, and moves with it.
    assert "image" not in spec
    assert "image" not in spec["database"]
    assert spec["mail"]["recipient"] == "test@domain.com"
    assert spec["database"]["name"] == "denied_access"
    assert spec["database"]["storage"] == {"size": "1Gi", "retainOnDelete": False}
    assert spec["allowlist"] == []
    assert spec["banPrefixLengths"] == {"ipv4": 32, "ipv6": 64}
    assert spec["service"] == {"type": "NodePort"}


@pytest.mark.parametrize("duration", ["1s", "30m", "24h", "7d", "1d12h", "3650d", "3649d86399s"])
def test_ban_durations_in_range_are_accepted(crd: Cluster, namespace: str, duration: str) -> None:
    apply_manifest(crd, blacklist_service("lasting", namespace, banDuration=duration))
    stored = get_json(crd, "bls", "lasting", "-n", namespace)
    assert stored is not None
    assert stored["spec"]["banDuration"] == duration


@pytest.mark.parametrize(
    ("change", "field_path"),
    [
        ({"database": {"name": "other"}}, "spec.database.name"),
        ({"database": {"storage": {"size": "512Mi"}}}, "spec.database.storage.size"),
        ({"database": {"storage": {"storageClassName": "fast"}}}, "spec.database.storage"),
    ],
)
def test_immutable_fields_cannot_change(
    crd: Cluster, namespace: str, change: dict[str, Any], field_path: str
) -> None:
    apply_manifest(crd, blacklist_service("fixed", namespace))
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        apply_manifest(crd, blacklist_service("fixed", namespace, **change))
    assert field_path in rejected.value.stderr


EXTERNAL = {"secretRef": {"name": "pg"}}


@pytest.mark.parametrize(
    ("created", "changed"),
    [({}, {"external": EXTERNAL}), ({"external": EXTERNAL}, {})],
    ids=["bundled-to-external", "external-to-bundled"],
)
def test_switching_between_bundled_and_external_database_is_refused(
    crd: Cluster, namespace: str, created: dict[str, Any], changed: dict[str, Any]
) -> None:
    apply_manifest(crd, blacklist_service("ledger", namespace, database=created))
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        apply_manifest(crd, blacklist_service("ledger", namespace, database=changed))
    assert "spec.database.external cannot be added or removed" in rejected.value.stderr
    stored = get_json(crd, "bls", "ledger", "-n", namespace)
    assert stored is not None
    assert ("external" in stored["spec"]["database"]) == ("external" in created)


def test_explain_describes_the_external_database(crd: Cluster) -> None:
    texts: list[str] = []

    def published() -> bool:
        # The CRD is cluster-wide: another session sharing the cluster may have applied its
        # own copy meanwhile, so apply ours again; the API server publishes it to kubectl
        # explain within seconds.
        install_crd(crd)
        texts[:] = [
            " ".join(crd.kubectl("explain", f"blacklistservices.spec.database.{path}").split())
            for path in ("external", "external.secretRef")
        ]
        return "DatabaseSecretInvalid" in texts[0]

    assert wait_until(published, timeout=60, interval=2)
    external, secret_ref = texts
    assert "Not supported" not in external
    assert "switching between bundled and external is refused" in external
    assert '"url"' in secret_ref
    assert '"username", "password"' in secret_ref


def test_printer_columns(crd: Cluster, namespace: str) -> None:
    apply_manifest(crd, blacklist_service("columns", namespace, replicas=2))
    header = crd.kubectl("get", "bls", "-n", namespace).splitlines()[0].split()
    assert header == ["NAME", "READY", "REPLICAS", "BANNED", "NODEPORT", "AGE"]
    wide = crd.kubectl("get", "bls", "-n", namespace, "-o", "wide").splitlines()[0].split()
    assert wide == [*header, "READY-REPLICAS", "REASON", "IMAGE"]


def test_the_blacklist_category_lists_the_resources(crd: Cluster, namespace: str) -> None:
    apply_manifest(crd, blacklist_service("listed", namespace))
    listed = crd.kubectl("get", "blacklist", "-n", namespace, "-o", "name")
    assert "blacklistservice.blacklist.dev/listed" in listed.split()


def test_kubectl_scale_sets_spec_replicas(crd: Cluster, namespace: str) -> None:
    apply_manifest(crd, blacklist_service("scaled", namespace))
    crd.kubectl("scale", "bls/scaled", "-n", namespace, "--replicas=3")
    stored = get_json(crd, "bls", "scaled", "-n", namespace)
    assert stored is not None
    assert stored["spec"]["replicas"] == 3


def test_scale_is_refused_while_an_autoscaler_owns_the_replicas(
    crd: Cluster, namespace: str
) -> None:
    apply_manifest(crd, blacklist_service("auto", namespace, autoscaling={"maxReplicas": 4}))
    with pytest.raises(subprocess.CalledProcessError) as rejected:
        crd.kubectl("scale", "bls/auto", "-n", namespace, "--replicas=3")
    assert "spec.replicas cannot change while spec.autoscaling owns" in rejected.value.stderr
    with pytest.raises(subprocess.CalledProcessError):
        apply_manifest(
            crd, blacklist_service("auto", namespace, replicas=2, autoscaling={"maxReplicas": 4})
        )
    # Setting and removing the autoscaler, or changing its bounds, stays possible.
    apply_manifest(crd, blacklist_service("auto", namespace, autoscaling={"maxReplicas": 6}))
    apply_manifest(crd, blacklist_service("auto", namespace, replicas=2))
    stored = get_json(crd, "bls", "auto", "-n", namespace)
    assert stored is not None
    assert stored["spec"]["replicas"] == 2
    assert "autoscaling" not in stored["spec"]


def test_every_field_has_a_description() -> None:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = crd["spec"]["versions"]
    missing: list[str] = []

    def walk(schema: dict[str, Any], path: str) -> None:
        # The API server refuses anything but the type on metadata; kubectl explains it anyway.
        if "description" not in schema and path != ".metadata":
            missing.append(path)
        for name, child in (schema.get("properties") or {}).items():
            walk(child, f"{path}.{name}")
        if "items" in schema:
            walk(schema["items"], f"{path}[]")

    walk(version["schema"]["openAPIV3Schema"], "")
    assert missing == []
    assert all(column.get("description") for column in version["additionalPrinterColumns"])
