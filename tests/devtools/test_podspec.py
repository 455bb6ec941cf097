"""Unit tests of the pod runner's kubelet logic: env resolution, addresses, hosts, images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from blacklist_devtools.podspec import (
    PodSpecError,
    container_env,
    expand,
    hosts_file,
    local_address,
    program_for,
    selector_matches,
)

CONFIG_MAPS = {("ns", "db"): {"host": "demo-postgres.ns.svc", "port": "5432"}}
SECRETS = {("ns", "db"): {"username": "blacklist", "password": "s3cret"}}


def config_maps(namespace: str, name: str) -> Mapping[str, str] | None:
    return CONFIG_MAPS.get((namespace, name))


def secrets(namespace: str, name: str) -> Mapping[str, str] | None:
    return SECRETS.get((namespace, name))


def pod(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "demo-abc", "namespace": "ns", "uid": "u-1", "labels": {"a": "b"}},
        "spec": {"nodeName": "kwok-node-0", "containers": [container]},
    }


def test_local_address_keeps_the_pod_part_of_the_ip() -> None:
    assert local_address("10.244.3.17") == "127.244.3.17"
    with pytest.raises(PodSpecError):
        local_address("fd00::1")


@pytest.mark.parametrize(
    ("value", "expanded"),
    [
        ("$(A)-$(B)", "1-2"),
        ("$$(A)", "$(A)"),
        ("$(MISSING)", "$(MISSING)"),
        ("plain", "plain"),
    ],
)
def test_expand_follows_kubelet_rules(value: str, expanded: str) -> None:
    assert expand(value, {"A": "1", "B": "2"}) == expanded


def test_env_resolves_references_in_order() -> None:
    container = {
        "name": "main",
        "envFrom": [{"configMapRef": {"name": "db"}, "prefix": "DB_"}],
        "env": [
            {"name": "USER", "valueFrom": {"secretKeyRef": {"name": "db", "key": "username"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
            {"name": "URL", "value": "postgresql://$(USER):$(PASS)@$(DB_host):$(DB_port)/x"},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['a']"}}},
        ],
    }
    env = container_env(pod(container), container, "127.244.0.9", config_maps, secrets, {})
    assert env["URL"] == "postgresql://blacklist:s3cret@demo-postgres.ns.svc:5432/x"
    assert env["NS"] == "ns"
    assert env["IP"] == "127.244.0.9"
    assert env["LABEL"] == "b"


def test_missing_reference_blocks_the_start_unless_optional() -> None:
    reference: dict[str, Any] = {"name": "nope", "key": "k"}
    missing = {"name": "X", "valueFrom": {"secretKeyRef": reference}}
    container = {"name": "main", "env": [missing]}
    with pytest.raises(PodSpecError, match="Secret ns/nope not found"):
        container_env(pod(container), container, "127.244.0.9", config_maps, secrets, {})
    reference["optional"] = True
    env = container_env(pod(container), container, "127.244.0.9", config_maps, secrets, {})
    assert "X" not in env


def test_hosts_file_resolves_services_with_a_ready_pod() -> None:
    services = [
        {"metadata": {"name": "demo-postgres", "namespace": "ns"}},
        {"metadata": {"name": "other", "namespace": "ns"}},
    ]
    text = hosts_file(services, {("ns", "demo-postgres"): "127.244.0.4"}, "ns", "p", "127.244.0.2")
    assert "127.244.0.4 demo-postgres.ns.svc.cluster.local demo-postgres.ns.svc" in text
    assert " demo-postgres\n" in text
    assert "other" not in text


def test_images_map_to_programs() -> None:
    service = program_for("registry.example/flask-blacklist-svc:v1", [])
    postgres = program_for("postgres:16", [])
    operator = program_for("blacklist-operator:0.1.0", ["--all-namespaces"])
    assert service is not None
    assert service.argv[-1] == "blacklist_service"
    assert postgres is not None
    assert postgres.kind == "postgres"
    assert operator is not None
    assert operator.argv[-1] == "--all-namespaces"
    assert program_for("nginx:1", []) is None


def test_selector_matching() -> None:
    assert selector_matches({"app": "x"}, {"app": "x", "b": "c"})
    assert not selector_matches({"app": "x"}, {"app": "y"})
    assert not selector_matches({}, {"app": "x"})
