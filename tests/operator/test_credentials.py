"""The database credentials, in pure builders.

Never pasted into a URL, re-applied at each database start, and Secret ``N-db``
owned only while the ledger is not to be retained.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from blacklist_operator.builders import build_children, build_database_deployment
from blacklist_operator.builders.credentials import (
    build_database_secret,
    managed_secret,
    secret_owner_references,
)
from blacklist_operator.builders.database import ROLE_CREDENTIALS_SCRIPT
from blacklist_operator.builders.naming import CREDENTIALS_ANNOTATION
from blacklist_operator.builders.service import build_service_deployment
from blacklist_operator.model.resource import BlacklistService, parse

HOSTILE_PASSWORDS = [
    "p@ssword",
    "100%sure",
    "%40%2F",
    "a/b/c",
    "user:pass",
    "@:/%?#[]",
    "with space",
    "quote'\"\\back",
    "$(DB_HOST)",
]


def make(**spec: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 1},
            "spec": spec,
        }
    )


def kubelet_environment(
    env: list[dict[str, Any]], config_map: dict[str, str], secret: dict[str, str]
) -> dict[str, str]:
    """The environment a container gets: references resolved, ``$(VAR)`` of earlier ones expanded.

    Values taken from a ConfigMap or Secret are used as they are, never expanded.
    """
    resolved: dict[str, str] = {}
    for item in env:
        if "value" in item:
            resolved[item["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda match: resolved.get(match[1], match[0]),
                item["value"],
            )
            continue
        if "valueFrom" not in item:
            resolved[item["name"]] = ""  # declared empty: no value, as the API server keeps it
            continue
        source = item["valueFrom"]
        if "secretKeyRef" in source:
            resolved[item["name"]] = secret[source["secretKeyRef"]["key"]]
        elif "configMapKeyRef" in source:
            resolved[item["name"]] = config_map[source["configMapKeyRef"]["key"]]
    return resolved


@pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
def test_database_url_holds_whatever_the_secret_holds(password: str) -> None:
    bls = make()
    (container,) = build_service_deployment(bls)["spec"]["template"]["spec"]["containers"]
    config_map = {"host": "demo-postgres.team.svc", "port": "5432", "database": "denied_access"}
    environment = kubelet_environment(
        container["env"], config_map, {"username": "us@er:/%", "password": password}
    )
    url = make_url(environment["DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.database) == ("demo-postgres.team.svc", 5432, "denied_access")
    # What psycopg2 (libpq) logs in with: the URL's credentials, else PGUSER/PGPASSWORD.
    assert (url.username or environment["PGUSER"]) == "us@er:/%"
    assert (url.password or environment["PGPASSWORD"]) == password
    assert password not in environment["DATABASE_URL"]


def test_database_starts_by_giving_the_role_the_secrets_password() -> None:
    bls = make(database={"image": "postgres:16"})
    pod = build_database_deployment(bls)["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert init["name"] == "set-password"
    assert init["image"] == server["image"] == "postgres:16"
    env = {item["name"]: item for item in init["env"]}
    assert env["POSTGRES_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-db",
        "key": "username",
    }
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-db",
        "key": "password",
    }
    assert init["volumeMounts"] == server["volumeMounts"]
    assert init["securityContext"] == server["securityContext"]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    script = init["command"][-1]
    assert script == ROLE_CREDENTIALS_SCRIPT
    # The password goes to psql as a variable that psql quotes, never into the SQL text.
    assert "ALTER ROLE :\"role\" WITH PASSWORD :'\"'\"'password'\"'\"'" in script
    assert "listen_addresses=''" in script


def test_a_new_secret_restarts_both_deployments() -> None:
    bls = make()
    children = {
        (child["kind"], child["metadata"]["name"]): child
        for child in build_children(bls, None, credentials="secret-uid-2")
    }
    for name in ("demo", "demo-postgres"):
        template = children["Deployment", name]["spec"]["template"]["metadata"]
        assert template["annotations"] == {CREDENTIALS_ANNOTATION: "secret-uid-2"}
    # Without it (the drift check, which does not read the Secret) nothing is asserted.
    for child in build_children(bls):
        if child["kind"] == "Deployment":
            assert "annotations" not in child["spec"]["template"]["metadata"]


def test_the_secrets_owner_follows_retain_on_delete() -> None:
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "u"}
    stale = {"apiVersion": "blacklist.dev/v1", "kind": "BlacklistService", "uid": "old"}
    owned = secret_owner_references(make(), [other, stale])
    assert [reference["uid"] for reference in owned] == ["u", "uid-1"]
    assert owned[1]["controller"] is True
    retained = make(database={"storage": {"retainOnDelete": True}})
    assert secret_owner_references(retained, [other, owned[1]]) == [other]
    assert secret_owner_references(retained, []) == []


def test_only_generated_secrets_are_managed() -> None:
    assert managed_secret(build_database_secret(make(), "x"))
    assert not managed_secret({"metadata": {"name": "demo-db", "labels": {"team": "a"}}})
    assert not managed_secret({"metadata": {"name": "demo-db"}})
