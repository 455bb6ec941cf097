"""Builders are pure: assert on the paths of the manifests they return."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from blacklist_contract.prefixes import Prefix
from blacklist_contract.wire import Section, decode_part, encode_part
from blacklist_operator.builders import (
    build_banlist_head,
    build_banlist_part,
    build_children,
    build_database_configmap,
    build_database_deployment,
    build_database_network_policy,
    build_database_secret,
    build_database_service,
    build_persistent_volume,
    build_persistent_volume_claim,
    build_role,
    build_role_binding,
    build_service,
    build_service_account,
    build_service_deployment,
)
from blacklist_operator.builders.banlist import HeadState
from blacklist_operator.builders.credentials import PASSWORD_ALPHABET, generate_password
from blacklist_operator.model.resource import BlacklistService, parse

STANDARD_LABELS = {
    "app.kubernetes.io/name": "blacklist-service",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/managed-by": "blacklist-operator",
}


def make(**spec: Any) -> BlacklistService:
    return parse(
        {
            "metadata": {"name": "demo", "namespace": "team", "uid": "uid-1", "generation": 2},
            "spec": spec,
        }
    )


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container["env"]}


def test_every_namespaced_child_is_owned_and_labelled() -> None:
    for manifest in build_children(make()):
        assert manifest["apiVersion"]
        assert manifest["kind"]
        metadata = manifest["metadata"]
        assert STANDARD_LABELS.items() <= metadata["labels"].items()
        assert metadata["namespace"] == "team"
        (owner,) = metadata["ownerReferences"]
        assert owner["kind"] == "BlacklistService"
        assert owner["uid"] == "uid-1"
        assert owner["controller"] is True


def test_children_names_follow_the_spec() -> None:
    names = {(m["kind"], m["metadata"]["name"]) for m in build_children(make())}
    assert names == {
        ("PersistentVolumeClaim", "demo-postgres"),
        ("ConfigMap", "demo-db"),
        ("Service", "demo-postgres"),
        ("NetworkPolicy", "demo-postgres"),
        ("Deployment", "demo-postgres"),
        ("ServiceAccount", "demo"),
        ("Role", "demo-banlist-reader"),
        ("RoleBinding", "demo-banlist-reader"),
        ("Service", "demo"),
        ("Deployment", "demo"),
    }


def test_service_deployment() -> None:
    deployment = build_service_deployment(make(replicas=3, image="svc:v2", port=8080))
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "service"
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "demo"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == "svc:v2"
    assert container["ports"][0]["containerPort"] == 8080
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "64Mi"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["state"]["emptyDir"] == {"sizeLimit": "256Mi"}


def test_service_workers_follow_spec_workers() -> None:
    (container,) = build_service_deployment(make(workers=3))["spec"]["template"]["spec"][
        "containers"
    ]
    assert env_of(container)["WEB_CONCURRENCY"] == {"name": "WEB_CONCURRENCY", "value": "3"}
    (default,) = build_service_deployment(make())["spec"]["template"]["spec"]["containers"]
    assert "WEB_CONCURRENCY" not in env_of(default)


def test_service_log_format_follows_spec_log_format() -> None:
    for spec, expected in (({}, "text"), ({"logFormat": "json"}, "json")):
        (container,) = build_service_deployment(make(**spec))["spec"]["template"]["spec"][
            "containers"
        ]
        # Always set, so the image's own default never decides.
        assert env_of(container)["LOG_FORMAT"] == {"name": "LOG_FORMAT", "value": expected}


def test_service_environment_follows_the_contract() -> None:
    bls = make(
        allowlist=["10.0.0.0/8", "127.0.0.1"],
        trustedProxies=["192.168.0.0/16"],
        mail={"host": "smtp.example", "port": 2525, "tls": True, "secretRef": {"name": "mt"}},
    )
    (container,) = build_service_deployment(bls)["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert env["PORT"]["value"] == "5004"
    assert env["BANLIST_CONFIGMAP"]["value"] == "demo-banlist"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["DB_HOST"]["valueFrom"]["configMapKeyRef"] == {"name": "demo-db", "key": "host"}
    assert env["DB_PORT"]["valueFrom"]["configMapKeyRef"]["key"] == "port"
    assert env["DB_NAME"]["valueFrom"]["configMapKeyRef"]["key"] == "database"
    assert env["DB_USER"]["valueFrom"]["secretKeyRef"] == {"name": "demo-db", "key": "username"}
    assert env["DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    names = [item["name"] for item in container["env"]]
    assert names.index("DATABASE_URL") > names.index("DB_PASSWORD")
    assert env["DATABASE_URL"]["value"] == "postgresql+psycopg2://$(DB_HOST):$(DB_PORT)/$(DB_NAME)"
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "demo-db", "key": "username"}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "demo-db", "key": "password"}
    assert env["ALLOWLIST"]["value"] == "10.0.0.0/8,127.0.0.1/32"
    assert env["BAN_DURATION"] == {"name": "BAN_DURATION"}  # empty: no "value" (see _text)
    assert env["TRUSTED_PROXIES"]["value"] == "192.168.0.0/16"
    assert env["ALERT_RECIPIENT"]["value"] == "test@domain.com"
    assert env["MAIL_SERVER"]["value"] == "smtp.example"
    assert env["MAIL_PORT"]["value"] == "2525"
    assert env["MAIL_USE_TLS"]["value"] == "true"
    assert env["MAIL_USE_SSL"]["value"] == "false"
    assert env["MAIL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "mt", "key": "username"}
    assert env["MAIL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mt", "key": "password"}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts[env["STATE_DIR"]["value"]] == "state"


def test_ban_prefix_lengths_reach_the_service_environment() -> None:
    (default,) = build_service_deployment(make())["spec"]["template"]["spec"]["containers"]
    assert env_of(default)["BAN_PREFIX_IPV4"] == {"name": "BAN_PREFIX_IPV4", "value": "32"}
    assert env_of(default)["BAN_PREFIX_IPV6"] == {"name": "BAN_PREFIX_IPV6", "value": "64"}
    wide = make(banPrefixLengths={"ipv4": 24, "ipv6": 48})
    (container,) = build_service_deployment(wide)["spec"]["template"]["spec"]["containers"]
    assert env_of(container)["BAN_PREFIX_IPV4"]["value"] == "24"
    assert env_of(container)["BAN_PREFIX_IPV6"]["value"] == "48"


def test_no_literal_secret_in_any_pod_spec() -> None:
    for deployment in (build_service_deployment(make()), build_database_deployment(make())):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            for item in container["env"]:
                if "PASSWORD" in item["name"] or "USER" in item["name"]:
                    assert "valueFrom" in item, item


def test_nodeport_service() -> None:
    service = build_service(make(nodePort=30911, port=5004))
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["nodePort"], port["targetPort"]) == (5004, 30911, "http")
    assert "nodePort" not in build_service(make())["spec"]["ports"][0]


def test_load_balancer_service_keeps_the_client_addresses() -> None:
    service = build_service(make(nodePort=30911, service={"type": "LoadBalancer"}))
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    assert service["spec"]["ports"][0]["nodePort"] == 30911


def test_cluster_ip_service_has_no_node_port_and_no_traffic_policy() -> None:
    service = build_service(make(service={"type": "ClusterIP"}))
    assert service["spec"]["type"] == "ClusterIP"
    # Left out, not set to a default: server-side apply then removes them on a switch.
    assert "externalTrafficPolicy" not in service["spec"]
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http", "port": 5004, "targetPort": "http", "protocol": "TCP"}


def test_database_deployment() -> None:
    deployment = build_database_deployment(make(database={"image": "postgres:17"}))
    assert deployment["metadata"]["name"] == "demo-postgres"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "database"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert deployment["spec"]["replicas"] == 1
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "postgres:17"
    env = env_of(container)
    assert env["POSTGRES_USER"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-db",
        "key": "username",
    }
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert env["POSTGRES_DB"]["valueFrom"]["configMapKeyRef"]["key"] == "database"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert env["PGDATA"]["value"].startswith(mounts["data"] + "/")
    assert mounts["run"] == "/var/run/postgresql"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "pg_isready" in " ".join(container["readinessProbe"]["exec"]["command"])
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] == "demo-postgres"
    assert pod["automountServiceAccountToken"] is False


def test_database_service_configmap_and_policy() -> None:
    service = build_database_service(make())
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"][0]["port"] == 5432
    config = build_database_configmap(make(database={"name": "ledger"}))
    assert config["data"] == {
        "host": "demo-postgres.team.svc",
        "port": "5432",
        "database": "ledger",
    }
    policy = build_database_network_policy(make(), operator_namespace="blacklist-system")
    sources = policy["spec"]["ingress"][0]["from"]
    assert sources[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "service"
    assert "namespaceSelector" not in sources[0]  # the service's own namespace only
    assert sources[1]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "blacklist-operator"
    }
    # The operator only from its own namespace: a label is all another team needs to set.
    assert sources[1]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "blacklist-system"
    }
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "database"
    # An operator outside the cluster is no pod: no pod is admitted in its name.
    alone = build_database_network_policy(make())
    assert len(alone["spec"]["ingress"][0]["from"]) == 1


def test_secret_holds_base64_credentials() -> None:
    secret = build_database_secret(make(), "s3cret")
    assert base64.b64decode(secret["data"]["password"]) == b"s3cret"
    assert base64.b64decode(secret["data"]["username"]) == b"blacklist"
    retained = build_database_secret(make(database={"storage": {"retainOnDelete": True}}), "x")
    assert "ownerReferences" not in retained["metadata"]


def test_generated_passwords_are_url_safe_and_distinct() -> None:
    passwords = {generate_password() for _ in range(20)}
    assert len(passwords) == 20
    assert all(set(password) <= set(PASSWORD_ALPHABET) for password in passwords)
    assert all(len(password) >= 24 for password in passwords)


def test_dynamic_storage() -> None:
    claim = build_persistent_volume_claim(
        make(database={"storage": {"size": "5Gi", "storageClassName": "fast"}})
    )
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert "volumeName" not in claim["spec"]
    assert build_persistent_volume(make()) is None
    assert "storageClassName" not in build_persistent_volume_claim(make())["spec"]


@pytest.mark.parametrize("retain", [False, True])
def test_host_path_storage(retain: bool) -> None:
    bls = make(database={"storage": {"hostPath": "/data/pg", "retainOnDelete": retain}})
    volume = build_persistent_volume(bls)
    assert volume is not None
    name = volume["metadata"]["name"]
    assert name.startswith("team-demo-")
    assert len(name) <= 63
    assert volume["metadata"]["labels"]["app.kubernetes.io/instance"] == "demo"
    assert volume["metadata"]["labels"]["blacklist.dev/namespace"] == "team"
    assert volume["metadata"]["annotations"]["blacklist.dev/owner"] == "team/demo"
    assert volume["spec"]["hostPath"]["type"] == "DirectoryOrCreate"
    assert "ownerReferences" not in volume["metadata"]
    assert volume["spec"]["hostPath"]["path"] == "/data/pg"
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["claimRef"]["name"] == "demo-postgres"
    assert volume["spec"]["claimRef"]["namespace"] == "team"
    claim = build_persistent_volume_claim(bls)
    assert claim["spec"]["volumeName"] == name
    assert claim["spec"]["storageClassName"] == ""
    assert ("ownerReferences" in claim["metadata"]) is not retain


def test_rbac_reads_only_the_ban_list() -> None:
    assert build_service_account(make())["metadata"]["name"] == "demo"
    (rule,) = build_role(make())["rules"]
    assert rule["resources"] == ["configmaps"]
    assert rule["verbs"] == ["get", "list", "watch"]
    assert rule["resourceNames"] == ["demo-banlist"] + [f"demo-banlist-{i}" for i in range(1, 64)]
    binding = build_role_binding(make())
    assert binding["roleRef"]["name"] == "demo-banlist-reader"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "demo", "namespace": "team"}]


def test_banlist_head_and_part() -> None:
    state = HeadState(
        count=5, capacity=5_000_000, generation=3, parts=2, cursor=9, lift_cursor=3,
        lifts_seen=1234, ledger_table=77, filter_key="k",
    )  # fmt: skip
    head = build_banlist_head(make(), "1.2.3.4\n", state)
    assert head["metadata"]["name"] == "demo-banlist"
    assert head["metadata"]["labels"]["app.kubernetes.io/component"] == "banlist"
    assert head["data"] == {
        "addresses": "1.2.3.4\n",
        "count": "5",
        "capacity": "5000000",
        "snapshot": "3",
        "parts": "2",
    }
    assert head["metadata"]["annotations"] == {
        "blacklist.dev/ledger-cursor": "9",
        "blacklist.dev/lift-cursor": "3",
        "blacklist.dev/ledger-table": "77",
        "blacklist.dev/allowlist": "k",
        "blacklist.dev/lifts-seen": "1234",
    }
    section = Section.empty(4, 32)
    section.append(Prefix(4, 0x05060708, 32), 1767225600)
    part = build_banlist_part(make(), 2, encode_part([section]), 3, 1234)
    assert part["metadata"]["name"] == "demo-banlist-2"
    assert "data" not in part
    (decoded,) = decode_part(base64.b64decode(part["binaryData"]["bans"]))
    assert list(decoded.bans()) == [(Prefix(4, 0x05060708, 32), 1767225600)]
    assert part["metadata"]["annotations"] == {
        "blacklist.dev/snapshot": "3",
        "blacklist.dev/lifts-seen": "1234",
    }


def test_builders_are_deterministic() -> None:
    assert build_children(make(replicas=2)) == build_children(make(replicas=2))
