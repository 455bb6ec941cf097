"""Pure tests of an external database's CA (``caSecretRef``/``caConfigMapRef``).

The reference is parsed into the model, the service's pod mounts the key read-only
and points libpq at it (``PGSSLROOTCERT``), and the operator reads the same key
(``model.external.ca_certificate``) for its own connections.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from blacklist_operator.builders.service import CA_FILE, DATABASE_CA_DIR
from blacklist_operator.model.external import DatabaseSecretError, ca_certificate
from blacklist_operator.model.fields import SpecError
from blacklist_operator.model.knobs import CaReference
from blacklist_operator.model.resource import parse
from tests.operator.test_external_database import (
    KEYS,
    env_of,
    make,
    resolve,
    secret,
    service_deployment,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize(
    ("field", "source"),
    [
        ("caSecretRef", {"secret": {"secretName": "pg-ca", "items": [{"key": "ca.pem"}]}}),
        ("caConfigMapRef", {"configMap": {"name": "pg-ca", "items": [{"key": "ca.pem"}]}}),
    ],
)
def test_the_ca_is_mounted_read_only_and_named_to_libpq(field: str, source: dict[str, Any]) -> None:
    bls = make(
        secretRef={"name": "pg"},
        sslmode="verify-full",
        **{field: {"name": "pg-ca", "key": "ca.pem"}},
    )
    deployment = service_deployment(bls, resolve(bls, secret(**KEYS)))
    env = env_of(deployment)
    assert env["PGSSLMODE"]["value"] == "verify-full"
    assert env["PGSSLROOTCERT"]["value"] == f"{DATABASE_CA_DIR}/{CA_FILE}"
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == "database-ca"]
    kind = next(iter(source))
    for item in volume[kind]["items"]:
        assert item == {"key": "ca.pem", "path": CA_FILE}
    assert {k: v for k, v in volume[kind].items() if k != "items"} == {
        k: v for k, v in source[kind].items() if k != "items"
    }
    (container,) = pod_spec(deployment)["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "database-ca"]
    # A whole-volume mount, never subPath: a renewed CA reaches the running pods.
    assert mount == {"name": "database-ca", "mountPath": DATABASE_CA_DIR, "readOnly": True}


def test_without_a_ca_nothing_is_mounted() -> None:
    bls = make()
    deployment = service_deployment(bls, resolve(bls, secret(**KEYS)))
    assert "PGSSLROOTCERT" not in env_of(deployment)
    assert [v["name"] for v in pod_spec(deployment)["volumes"]] == ["state", "tmp"]


def test_verifying_the_server_needs_a_ca() -> None:
    for sslmode in ("verify-ca", "verify-full"):
        with pytest.raises(DatabaseSecretError, match="caSecretRef"):
            resolve(make(secretRef={"name": "pg"}, sslmode=sslmode), secret(**KEYS))
    url = "postgresql://app:pw@db.example/bans?sslmode=verify-full"
    with pytest.raises(DatabaseSecretError, match="needs the CA"):
        resolve(make(), secret(url=url))
    with_ca = make(secretRef={"name": "pg"}, caConfigMapRef={"name": "ca", "key": "ca.crt"})
    assert resolve(with_ca, secret(url=url)).sslmode == "verify-full"


@pytest.mark.parametrize(
    ("external", "path"),
    [
        (
            {"caSecretRef": {"name": "a", "key": "k"}, "caConfigMapRef": {"name": "b", "key": "k"}},
            "spec.database.external",
        ),
        ({"caSecretRef": {"name": "a"}}, "spec.database.external.caSecretRef.key"),
        (
            {"caConfigMapRef": {"name": "A_B", "key": "k"}},
            "spec.database.external.caConfigMapRef.name",
        ),
        ({"caSecretRef": {"name": "a", "key": "../k"}}, "spec.database.external.caSecretRef.key"),
    ],
)
def test_a_wrong_ca_reference_names_its_field(external: dict[str, Any], path: str) -> None:
    body = {
        "metadata": {"name": "demo", "namespace": "team", "uid": "u", "generation": 1},
        "spec": {"database": {"external": {"secretRef": {"name": "pg"}, **external}}},
    }
    with pytest.raises(SpecError) as refused:
        parse(body)
    assert refused.value.field_path == path


def test_the_operator_reads_the_same_key() -> None:
    encoded = base64.b64encode(PEM.encode()).decode()
    assert (
        ca_certificate(CaReference("Secret", "ca", "ca.crt"), {"data": {"ca.crt": encoded}}) == PEM
    )
    assert (
        ca_certificate(CaReference("ConfigMap", "ca", "ca.crt"), {"data": {"ca.crt": PEM}}) == PEM
    )
    binary = {"binaryData": {"ca.crt": encoded}}
    assert ca_certificate(CaReference("ConfigMap", "ca", "ca.crt"), binary) == PEM
    reference = CaReference("ConfigMap", "ca", "ca.crt")
    for body, says in (
        (None, "ConfigMap ca .* not found"),
        ({"data": {"other": PEM}}, "has no key ca.crt"),
        ({"data": {"ca.crt": "not a certificate"}}, "holds no PEM certificate"),
    ):
        with pytest.raises(DatabaseSecretError, match=says):
            ca_certificate(reference, body)
