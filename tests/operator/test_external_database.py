"""Pure tests of ``spec.database.external``: its Secret parsed, and the children built for it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from blacklist_operator.builders import build_children
from blacklist_operator.builders.children import child_key
from blacklist_operator.builders.naming import CREDENTIALS_ANNOTATION, EXTERNAL_SECRET_ANNOTATION
from blacklist_operator.model.external import (
    DatabaseSecretError,
    ExternalDatabase,
    parse_database_secret,
)
from blacklist_operator.model.resource import BlacklistService, parse
from blacklist_operator.reconcile.readiness import database_progress, ready_condition
from blacklist_operator.runtime.state import DeploymentProgress


def make(**external: Any) -> BlacklistService:
    """A BlacklistService whose database is external (Secret ``pg`` unless ``external`` says)."""
    database = {"name": "ledger", "external": external or {"secretRef": {"name": "pg"}}}
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 2},
            "spec": {"database": database},
        }
    )


def secret(**values: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "pg", "resourceVersion": "7"},
        "data": {key: base64.b64encode(value.encode()).decode() for key, value in values.items()},
    }


KEYS = {"host": "pg.example", "port": "6432", "username": "app", "password": "p@ss:/%word"}
URL = "postgresql://app:p%40ss@db.example:5433/bans?sslmode=require"


def resolve(bls: BlacklistService, body: dict[str, Any] | None) -> ExternalDatabase:
    assert bls.spec.database.external is not None
    return parse_database_secret(bls.spec.database.external, bls.spec.database.name, body)


def test_a_secret_with_separate_keys() -> None:
    database = resolve(make(), secret(**KEYS))
    assert (database.host, database.port, database.database) == ("pg.example", 6432, "ledger")
    assert (database.user, database.password) == ("app", "p@ss:/%word")
    assert (database.from_url, database.sslmode) == (False, "prefer")
    assert "p@ss" not in repr(database)
    named = resolve(make(), secret(**KEYS, dbname="other_db"))
    assert named.database == "other_db"


def test_a_secret_with_a_url() -> None:
    database = resolve(make(secretRef={"name": "pg"}, sslmode="disable"), secret(url=URL))
    assert (database.host, database.port, database.database) == ("db.example", 5433, "bans")
    assert (database.user, database.password) == ("app", "p@ss")
    # The URL's sslmode wins over spec.database.external.sslmode, as in libpq.
    assert (database.from_url, database.sslmode) == (True, "require")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (None, ["Secret pg", "not found"]),
        (secret(host="h", port="5432", username="u"), ["password missing"]),
        (secret(port="5432", password="p"), ["host, username missing"]),
        (secret(**{**KEYS, "port": "fifty"}), ["port must be a port number"]),
        (secret(**KEYS, dbname="bad-name"), ["dbname must be a PostgreSQL identifier"]),
        (secret(url="mysql://u:p@h/db"), ["url must start with postgresql://"]),
        (secret(url="postgresql://u:p@h:5432/"), ["url lacks a database name"]),
        (secret(url="postgresql://h/db"), ["url lacks a user name"]),
        ({"metadata": {"name": "pg"}, "data": {"url": "%%%"}}, ["key url is not valid base64"]),
    ],
)
def test_an_unusable_secret_says_what_is_wrong(
    body: dict[str, Any] | None, words: list[str]
) -> None:
    with pytest.raises(DatabaseSecretError) as caught:
        resolve(make(), body)
    for word in words:
        assert word in str(caught.value)


def test_the_checksum_follows_the_data_only() -> None:
    first = resolve(make(), secret(**KEYS))
    moved = secret(**KEYS)
    moved["metadata"]["resourceVersion"] = "8"
    assert resolve(make(), moved).checksum == first.checksum
    assert resolve(make(), secret(**{**KEYS, "password": "new"})).checksum != first.checksum


def kinds(children: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [child_key(child) for child in children]


def test_no_bundled_database_children_with_an_external_database() -> None:
    bls = make()
    database = resolve(bls, secret(**KEYS))
    children = build_children(bls, "operators", "ignored-uid", None, database)
    assert kinds(children) == [
        ("ConfigMap", "demo-db"),
        ("ServiceAccount", "demo"),
        ("Role", "demo-banlist-reader"),
        ("RoleBinding", "demo-banlist-reader"),
        ("Service", "demo"),
        ("Deployment", "demo"),
    ]
    assert not [child for child in children if "postgres" in child["metadata"]["name"]]
    (configmap,) = [c for c in children if c["kind"] == "ConfigMap"]
    assert configmap["data"] == {
        "host": "pg.example",
        "port": "6432",
        "database": "ledger",
        "sslmode": "prefer",
    }


def test_an_unusable_secret_leaves_out_what_depends_on_it() -> None:
    children = build_children(make(), "operators", None, None, None)
    assert ("ConfigMap", "demo-db") not in kinds(children)
    assert ("Deployment", "demo") not in kinds(children)
    assert ("Service", "demo") in kinds(children)


def service_deployment(bls: BlacklistService, database: ExternalDatabase) -> dict[str, Any]:
    children = build_children(bls, None, None, None, database)
    (deployment,) = [c for c in children if c["kind"] == "Deployment"]
    return deployment


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item for item in container["env"]}


def test_service_takes_separate_keys_from_the_external_secret() -> None:
    bls = make()
    deployment = service_deployment(bls, resolve(bls, secret(**KEYS)))
    env = env_of(deployment)
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "username"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "password"}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "password"}
    assert env["DB_HOST"]["valueFrom"]["configMapKeyRef"] == {"name": "demo-db", "key": "host"}
    assert env["DATABASE_URL"]["value"] == "postgresql+psycopg2://$(DB_HOST):$(DB_PORT)/$(DB_NAME)"
    assert env["PGSSLMODE"]["value"] == "prefer"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {EXTERNAL_SECRET_ANNOTATION: resolve(bls, secret(**KEYS)).checksum}
    assert CREDENTIALS_ANNOTATION not in annotations


def test_service_takes_the_url_from_the_external_secret() -> None:
    bls = make()
    env = env_of(service_deployment(bls, resolve(bls, secret(url=URL))))
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "url"}
    assert env["PGSSLMODE"]["value"] == "require"
    assert "PGPASSWORD" not in env


@pytest.mark.parametrize("values", [KEYS, {"url": URL}])
def test_no_credential_is_a_literal_value(values: dict[str, str]) -> None:
    bls = make()
    deployment = service_deployment(bls, resolve(bls, secret(**values)))
    text = repr(deployment)
    for leaked in ("p@ss", "p%40ss", "app:"):
        assert leaked not in text


def test_ready_needs_no_database_deployment_but_a_usable_secret() -> None:
    bls = make()
    database = database_progress(bls, None)
    assert database[0]
    ready = ready_condition(
        bls, DeploymentProgress(True, "has 1/1 replicas available"), database, [], None
    )
    assert (ready["status"], ready["reason"]) == ("True", "AllReplicasAvailable")
    assert "external database of Secret pg" in ready["message"]
    invalid = ready_condition(
        bls,
        DeploymentProgress(True, "ok"),
        database,
        [],
        None,
        "Secret pg (spec.database.external) not found",
    )
    assert (invalid["status"], invalid["reason"]) == ("False", "DatabaseSecretInvalid")
    assert "Secret pg" in invalid["message"]


def test_the_example_builds_no_bundled_database() -> None:
    path = Path(__file__).resolve().parents[2] / "examples" / "external-database.yaml"
    example_secret, resource = yaml.safe_load_all(path.read_text())
    bls = parse({**resource, "metadata": {**resource["metadata"], "namespace": "team"}})
    database = resolve(bls, secret(**example_secret["stringData"]))
    assert (database.port, database.sslmode) == (5432, "require")
    names = [child["metadata"]["name"] for child in build_children(bls, None, None, None, database)]
    assert "team-ledger" in names
    assert not [name for name in names if name.endswith("-postgres")]
