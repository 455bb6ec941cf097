"""The service's Deployment and its Service (NodePort by default)."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.monitoring import METRICS_PORT_NAME
from blacklist_operator.builders.naming import (
    COMPONENT_SERVICE,
    EXTERNAL_SECRET_ANNOTATION,
    banlist_shard_name,
    database_settings_name,
    metadata,
    pod_metadata,
    selector_labels,
    service_name,
)
from blacklist_operator.builders.security import (
    SERVICE_UID,
    container_security_context,
    pod_security_context,
    resource_requirements,
)
from blacklist_operator.model.external import URL_KEY, ExternalDatabase
from blacklist_operator.model.resource import METRICS_PORT, BlacklistService

STATE_DIR = "/var/lib/blacklist"
# The state volume holds the outbox, the ban list file (16 bytes per ban: 16 MB at a
# million) and the metrics files. Bounded so that an outbox growing through a long
# outage gets the pod evicted and rescheduled, not the node's disk filled.
STATE_SIZE_LIMIT = "256Mi"
# On termination the pod leaves the Service's endpoints while its preStop hook
# sleeps, so that kube-proxies and ingress controllers stop sending it requests
# before the server stops accepting them.
PRE_STOP_SECONDS = 5
# The server's graceful shutdown (blacklist_service.serving.server.GRACEFUL_TIMEOUT): in-flight
# requests and the outbox's last round finish within it.
SERVER_GRACEFUL_SECONDS = 25
# The kubelet kills the pod after this: the hook, the graceful shutdown and a margin.
TERMINATION_GRACE_SECONDS = PRE_STOP_SECONDS + SERVER_GRACEFUL_SECONDS + 5
# Where the external database's CA is mounted (spec.database.external.caSecretRef).
DATABASE_CA_DIR = "/etc/blacklist/database-ca"
CA_FILE = "ca.crt"
# Spread the replicas over nodes and zones; soft, so a small cluster still runs them all.
SPREAD_TOPOLOGY_KEYS = ("kubernetes.io/hostname", "topology.kubernetes.io/zone")


def _config_map_key(variable: str, config_map: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"configMapKeyRef": {"name": config_map, "key": key}}}


def _secret_key(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _field(variable: str, path: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _database_ca_volume(
    resource: BlacklistService,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The external database's CA, read-only: the pod's volumes and the container's mounts.

    A whole-volume mount (not ``subPath``), so a renewed CA reaches running pods; libpq
    reads it at each new connection.
    """
    external = resource.spec.database.external
    if external is None or external.ca is None:
        return [], []
    items = [{"key": external.ca.key, "path": CA_FILE}]
    source = (
        {"secret": {"secretName": external.ca.name, "items": items}}
        if external.ca.kind == "Secret"
        else {"configMap": {"name": external.ca.name, "items": items}}
    )
    return (
        [{"name": "database-ca", **source}],
        [{"name": "database-ca", "mountPath": DATABASE_CA_DIR, "readOnly": True}],
    )


def _mail_environment(resource: BlacklistService) -> list[dict[str, Any]]:
    mail = resource.spec.mail
    environment: list[dict[str, Any]] = [{"name": "ALERT_RECIPIENT", "value": mail.recipient}]
    if mail.host is not None:
        environment.append({"name": "MAIL_SERVER", "value": mail.host})
    if mail.port is not None:
        environment.append({"name": "MAIL_PORT", "value": str(mail.port)})
    environment.append({"name": "MAIL_USE_TLS", "value": str(mail.tls).lower()})
    environment.append({"name": "MAIL_USE_SSL", "value": str(mail.ssl).lower()})
    if mail.sender is not None:
        environment.append({"name": "MAIL_DEFAULT_SENDER", "value": mail.sender})
    if mail.secret_name is not None:
        # By reference: the credentials never appear in the pod spec.
        environment.append(_secret_key("MAIL_USERNAME", mail.secret_name, "username"))
        environment.append(_secret_key("MAIL_PASSWORD", mail.secret_name, "password"))
    return environment


def _database_environment(
    resource: BlacklistService, external: ExternalDatabase | None
) -> list[dict[str, Any]]:
    settings = database_settings_name(resource)
    # Where: ConfigMap N-db (the bundled database's Service, or the external host).
    where = [
        _config_map_key("DB_HOST", settings, "host"),
        _config_map_key("DB_PORT", settings, "port"),
        _config_map_key("DB_NAME", settings, "database"),
    ]
    url = {
        # Declared after its parts: the kubelet expands $(VAR) of earlier variables only.
        "name": "DATABASE_URL",
        "value": "postgresql+psycopg2://$(DB_HOST):$(DB_PORT)/$(DB_NAME)",
    }
    if resource.spec.database.external is None:
        secret = settings
    else:
        secret = resource.spec.database.external.secret_name
        # libpq reads it whatever the URL's form; a sslmode in a Secret's url wins.
        sslmode = (
            external.sslmode if external is not None else resource.spec.database.external.sslmode
        )
        where.append({"name": "PGSSLMODE", "value": sslmode})
        if resource.spec.database.external.ca is not None:
            # libpq reads the CA from this file (mounted by _database_ca_volume).
            where.append({"name": "PGSSLROOTCERT", "value": f"{DATABASE_CA_DIR}/{CA_FILE}"})
        if external is not None and external.from_url:
            # The Secret's url as is, by reference: it holds the credentials.
            return [*where, _secret_key("DATABASE_URL", secret, URL_KEY)]
    return [
        *where,
        _secret_key("DB_USER", secret, "username"),
        _secret_key("DB_PASSWORD", secret, "password"),
        # The credentials stay out of the URL: libpq reads them from PGUSER/PGPASSWORD,
        # so a password holding "@", "%", "/" or ":" (an adopted Secret's) needs no
        # escaping and never shows in a logged URL. Host, port and database come from
        # the ConfigMap (a DNS name, digits, an SQL identifier): nothing to escape.
        _secret_key("PGUSER", secret, "username"),
        _secret_key("PGPASSWORD", secret, "password"),
        url,
    ]


def service_environment(
    resource: BlacklistService, external: ExternalDatabase | None = None
) -> list[dict[str, Any]]:
    """The service container's environment.

    Documented in docs/configuration.md ("The service environment") and docs/CONTRACTS.md.

    ``external`` is the parsed Secret of ``spec.database.external``: the database
    variables then refer to that Secret (its ``url``, or its ``username`` and
    ``password``), never to a generated ``N-db``.
    """
    return [
        {"name": "PORT", "value": str(resource.spec.port)},
        # /metrics is served there, not on PORT: Service N never exposes it.
        {"name": "METRICS_PORT", "value": str(METRICS_PORT)},
        {"name": "STATE_DIR", "value": STATE_DIR},
        {"name": "BANLIST_CONFIGMAP", "value": banlist_shard_name(resource.name, 0)},
        _field("POD_NAMESPACE", "metadata.namespace"),
        _field("POD_NAME", "metadata.name"),
        *_database_environment(resource, external),
        _text("ALLOWLIST", ",".join(str(n) for n in resource.spec.allowlist)),
        _text("TRUSTED_PROXIES", ",".join(str(n) for n in resource.spec.trusted_proxies)),
        # Seconds; empty: bans last until lifted.
        _text("BAN_DURATION", str(resource.spec.ban_duration or "")),
        # A hit bans the covering prefix of the caller's address, of these many bits.
        {"name": "BAN_PREFIX_IPV4", "value": str(resource.spec.ban_prefix_lengths[0])},
        {"name": "BAN_PREFIX_IPV6", "value": str(resource.spec.ban_prefix_lengths[1])},
        {"name": "LOG_FORMAT", "value": resource.spec.log_format},
        *_mail_environment(resource),
        *_workers_environment(resource),
    ]


def _text(name: str, value: str) -> dict[str, Any]:
    # Set even when empty, so no default of the image applies; but without "value": the
    # API server drops an empty one, and the child would read back as drifted.
    return {"name": name, "value": value} if value else {"name": name}


def _workers_environment(resource: BlacklistService) -> list[dict[str, Any]]:
    # Absent, the service sizes its workers from the container's CPU and memory limits.
    if resource.spec.workers is None:
        return []
    return [{"name": "WEB_CONCURRENCY", "value": str(resource.spec.workers)}]


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _spread(resource: BlacklistService) -> list[dict[str, Any]]:
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector_labels(resource, COMPONENT_SERVICE)},
        }
        for key in SPREAD_TOPOLOGY_KEYS
    ]


def rolling_update(resource: BlacklistService) -> dict[str, Any]:
    """How Deployment ``N`` replaces its pods: never more than the disruption budget allows.

    At most ``spec.disruption.maxUnavailable`` pods down at once, as for a drain, and
    never the last one: a single replica (or an autoscaler's minimum of one) is
    replaced surge-first, its successor ready before it stops. The surge (a quarter,
    at least one pod) lets a roll proceed when none may be down.
    """
    spec = resource.spec
    fewest = spec.autoscaling.min_replicas if spec.autoscaling is not None else spec.replicas
    max_unavailable = min(spec.disruption.max_unavailable, max(fewest - 1, 0))
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": "25%"},
    }


def build_service_deployment(
    resource: BlacklistService,
    credentials: str | None = None,
    external: ExternalDatabase | None = None,
) -> dict[str, Any]:
    """The service Deployment: ``N``, component ``service``.

    ``credentials`` (the uid of Secret ``N-db``) marks the pod template, so pods
    started with a Secret that was since replaced are rolled onto the new one;
    with ``external`` (the parsed Secret of an external database) its data's digest
    marks it instead, so an edited Secret rolls them too.
    With ``spec.autoscaling`` the manifest has no ``replicas``: the autoscaler owns it.
    """
    spec = resource.spec
    ca_volumes, ca_mounts = _database_ca_volume(resource)
    template_metadata = (
        pod_metadata(resource, COMPONENT_SERVICE, credentials)
        if external is None
        else pod_metadata(
            resource, COMPONENT_SERVICE, external.checksum, EXTERNAL_SECRET_ANNOTATION
        )
    )
    container = {
        "name": "service",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [
            {"name": "http", "containerPort": spec.port, "protocol": "TCP"},
            {"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": service_environment(resource, external),
        # Every 2 s: a new replica loads even 5,000,000 bans in a few seconds, and its
        # readiness (it holds the whole list) should be seen as soon as it is true.
        "readinessProbe": _probe("/readyz", period=2, failures=3),
        "livenessProbe": _probe("/healthz", period=10, failures=6),
        "resources": resource_requirements(spec.resources),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRE_STOP_SECONDS)]}}},
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": "state", "mountPath": STATE_DIR},
            # Writable scratch space for the WSGI server under a read-only root.
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
            *ca_mounts,
        ],
    }
    replicas = {} if spec.autoscaling is not None else {"replicas": spec.replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
        "spec": {
            **replicas,
            "strategy": rolling_update(resource),
            "selector": {"matchLabels": selector_labels(resource, COMPONENT_SERVICE)},
            "template": {
                "metadata": template_metadata,
                "spec": {
                    "serviceAccountName": service_name(resource),
                    "automountServiceAccountToken": True,
                    "securityContext": pod_security_context(SERVICE_UID),
                    "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
                    "topologySpreadConstraints": _spread(resource),
                    "containers": [container],
                    "volumes": [
                        {"name": "state", "emptyDir": {"sizeLimit": STATE_SIZE_LIMIT}},
                        {"name": "tmp", "emptyDir": {}},
                        *ca_volumes,
                    ],
                },
            },
        },
    }


def build_service(resource: BlacklistService) -> dict[str, Any]:
    """The Service ``N`` of ``spec.service.type`` (NodePort by default), port ``spec.port`` only.

    A NodePort or LoadBalancer Service keeps ``externalTrafficPolicy: Local``, so the
    pods see the clients' own addresses (and ban them, not a node). A ClusterIP
    Service has neither that policy nor a NodePort: under server-side apply, leaving
    them out of the manifest removes them when the type is switched in place, and the
    API server drops the NodePort it allocated itself.
    """
    service_type = resource.spec.service_type
    port: dict[str, Any] = {
        # The service's port only: the metrics port stays inside the cluster (N-metrics).
        "name": "http",
        "port": resource.spec.port,
        "targetPort": "http",
        "protocol": "TCP",
    }
    external = service_type != "ClusterIP"
    if external and resource.spec.node_port is not None:
        port["nodePort"] = resource.spec.node_port
    spec: dict[str, Any] = {"type": service_type}
    if external:
        spec["externalTrafficPolicy"] = "Local"
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
        "spec": {
            **spec,
            "selector": selector_labels(resource, COMPONENT_SERVICE),
            "ports": [port],
        },
    }
