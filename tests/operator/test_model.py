"""The typed model: CRD defaults when fields are absent, SpecError naming the bad field."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from blacklist_operator.model.resource import ImageDefaults, SpecError, parse, parse_spec


def test_an_empty_spec_gets_the_crd_defaults() -> None:
    spec = parse_spec({})
    assert spec.image == "flask-blacklist-svc:v1"
    assert spec.replicas == 1
    assert spec.port == 5004
    assert spec.node_port is None
    assert spec.mail.recipient == "test@domain.com"
    assert spec.database.image == "postgres:16"
    assert spec.database.name == "denied_access"
    assert spec.database.storage.size == "1Gi"
    assert spec.database.storage.retain_on_delete is False
    assert spec.allowlist == ()


def test_absent_images_are_the_operators_defaults_and_a_pinned_image_wins() -> None:
    defaults = ImageDefaults(service="registry.example/svc:2", database="registry.example/pg:16")
    following = parse_spec({}, defaults)
    assert (following.image, following.database.image) == (
        "registry.example/svc:2",
        "registry.example/pg:16",
    )
    pinned = parse_spec({"image": "svc:1", "database": {"image": "postgres:15"}}, defaults)
    assert (pinned.image, pinned.database.image) == ("svc:1", "postgres:15")
    body = {"metadata": {"name": "demo", "namespace": "ns"}, "spec": {}}
    assert parse(body, defaults).spec.image == "registry.example/svc:2"


def test_identity_and_networks_are_parsed() -> None:
    bls = parse(
        {
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1", "generation": 3},
            "spec": {
                "allowlist": ["10.0.0.1/8", "192.168.1.7"],
                "mail": {"secretRef": {"name": "m"}},
            },
        }
    )
    assert (bls.name, bls.namespace, bls.uid, bls.generation) == ("demo", "ns", "u-1", 3)
    assert bls.spec.allowlist == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    )
    assert bls.spec.mail.secret_name == "m"


@pytest.mark.parametrize(
    ("spec", "field_path"),
    [
        ({"replicas": -1}, "spec.replicas"),
        ({"replicas": "2"}, "spec.replicas"),
        ({"port": 0}, "spec.port"),
        ({"port": 9090}, "spec.port"),
        ({"nodePort": 80}, "spec.nodePort"),
        ({"image": "has space"}, "spec.image"),
        ({"allowlist": ["not-an-ip"]}, "spec.allowlist[0]"),
        ({"mail": {"recipient": "nobody"}}, "spec.mail.recipient"),
        ({"mail": {"tls": True, "ssl": True}}, "spec.mail.tls"),
        ({"database": {"name": "drop table"}}, "spec.database.name"),
        ({"database": {"storage": {"size": "lots"}}}, "spec.database.storage.size"),
        ({"database": {"storage": {"hostPath": "relative"}}}, "spec.database.storage.hostPath"),
        ({"resources": {"requests": {"gpu": "1"}}}, "spec.resources.requests.gpu"),
        ({"banDuration": "1 day"}, "spec.banDuration"),
        ({"banDuration": "0s"}, "spec.banDuration"),
        ({"banDuration": "3651d"}, "spec.banDuration"),
        ({"workers": 0}, "spec.workers"),
        ({"logFormat": "logfmt"}, "spec.logFormat"),
        ({"banPrefixLengths": {"ipv4": 33}}, "spec.banPrefixLengths.ipv4"),
        ({"service": {"type": "ExternalName"}}, "spec.service.type"),
        ({"service": {"type": "ClusterIP"}, "nodePort": 30911}, "spec.nodePort"),
        ({"banPrefixLengths": {"ipv6": 0}}, "spec.banPrefixLengths.ipv6"),
    ],
)
def test_what_the_schema_should_have_caught_is_a_spec_error(
    spec: dict[str, Any], field_path: str
) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert caught.value.field_path == field_path
    assert field_path in str(caught.value)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800), ("1d12h", 129600)]
)
def test_ban_durations_are_parsed_in_seconds(text: str, seconds: int) -> None:
    assert parse_spec({"banDuration": text}).ban_duration == seconds
    assert parse_spec({}).ban_duration is None


def test_ban_prefix_lengths_default_to_one_address_and_one_ipv6_network() -> None:
    assert parse_spec({}).ban_prefix_lengths == (32, 64)
    assert parse_spec({"banPrefixLengths": {"ipv4": 24}}).ban_prefix_lengths == (24, 64)


def test_the_service_type_defaults_to_node_port() -> None:
    assert parse_spec({}).service_type == "NodePort"
    assert parse_spec({"service": {"type": "ClusterIP"}}).service_type == "ClusterIP"
    balanced = parse_spec({"service": {"type": "LoadBalancer"}, "nodePort": 30911})
    assert (balanced.service_type, balanced.node_port) == ("LoadBalancer", 30911)


def test_production_knobs_are_parsed_with_their_defaults() -> None:
    plain = parse_spec({})
    assert plain.disruption.max_unavailable == 1
    assert plain.autoscaling is None
    assert plain.ingress is None
    assert plain.metrics.service_monitor is False
    assert plain.database.external is None
    spec = parse_spec(
        {
            "disruption": {"maxUnavailable": 0},
            "autoscaling": {"maxReplicas": 5},
            "ingress": {"host": "bans.example.com", "tlsSecretName": "bans-tls"},
            "metrics": {"serviceMonitor": True},
        }
    )
    assert spec.metrics.service_monitor is True
    assert spec.disruption.max_unavailable == 0
    assert spec.autoscaling is not None
    assert (spec.autoscaling.min_replicas, spec.autoscaling.max_replicas) == (1, 5)
    assert spec.autoscaling.target_cpu_percent == 80
    assert spec.ingress is not None
    assert spec.ingress.path == "/"
    assert spec.ingress.tls_secret_name == "bans-tls"


def test_an_external_database_is_parsed() -> None:
    database = parse_spec({"database": {"external": {"secretRef": {"name": "pg"}}}}).database
    assert database.external is not None
    assert (database.external.secret_name, database.external.sslmode) == ("pg", "prefer")
    external = {"secretRef": {"name": "pg"}, "sslmode": "verify-full"}
    parsed = parse_spec({"database": {"external": external}}).database.external
    assert parsed is not None
    assert parsed.sslmode == "verify-full"


@pytest.mark.parametrize(
    ("spec", "field_path"),
    [
        ({"autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
        ({"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas"),
        ({"ingress": {"host": "Not A Host"}}, "spec.ingress.host"),
        ({"database": {"external": {"secretRef": {}}}}, "spec.database.external.secretRef.name"),
        ({"database": {"external": {"secretRef": {"name": "pg"}, "sslmode": "x"}}},
         "spec.database.external.sslmode"),
    ],
)  # fmt: skip
def test_bad_knobs_are_spec_errors(spec: dict[str, Any], field_path: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert caught.value.field_path == field_path
