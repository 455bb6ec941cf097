"""The production knobs of a BlacklistService, typed: disruptions, autoscaling, scraping, ingress.

Also the external database a resource may use instead of the bundled one, and the
scheduled backup of the bundled one. Each
parser reads one object of the raw spec with the CRD's defaults, as
:mod:`blacklist_operator.model.fields` does for single fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blacklist_operator.model import fields
from blacklist_operator.model.fields import SpecError

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# The schema already holds this field; this version refuses it rather than ignore it.
NOT_YET = "is not supported by this version of the operator yet"
# A key of a Secret's or ConfigMap's data.
_DATA_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")
# Where the CA of an external database may be: the field, and the kind it names.
CA_REFERENCES = {"caSecretRef": "Secret", "caConfigMapRef": "ConfigMap"}
# A cron schedule, loosely: five fields, or a macro; the CronJob controller checks the rest.
CRON_SCHEDULE = re.compile(
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+[ \t]+){4}\S+)$"
)
DEFAULT_BACKUP_RETENTION = 7
DEFAULT_BACKUP_RESOURCES: Mapping[str, Mapping[str, str]] = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "256Mi"},
}
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class DisruptionSpec:
    """How many replicas a voluntary disruption (a drain) may take down at once."""

    max_unavailable: int = 1


@dataclass(frozen=True)
class AutoscalingSpec:
    """A HorizontalPodAutoscaler for the service Deployment."""

    min_replicas: int
    max_replicas: int
    target_cpu_percent: int = 80


@dataclass(frozen=True)
class MetricsSpec:
    """How Prometheus finds the service's metrics: a ServiceMonitor when its CRD is served."""

    service_monitor: bool = False


@dataclass(frozen=True)
class IngressSpec:
    """An Ingress in front of the service."""

    host: str
    path: str = "/"
    class_name: str | None = None
    tls_secret_name: str | None = None


@dataclass(frozen=True)
class ExternalDatabaseSpec:
    """A PostgreSQL run elsewhere, reached with the credentials of a Secret (model.external)."""

    secret_name: str
    sslmode: str = "prefer"
    # The CA certificate that signed the server's: a key of a Secret or a ConfigMap.
    ca: CaReference | None = None


@dataclass(frozen=True)
class BackupSpec:
    """A scheduled ``pg_dump`` of the bundled database onto a claim of its own."""

    schedule: str
    retention: int = DEFAULT_BACKUP_RETENTION
    size: str = "1Gi"
    storage_class_name: str | None = None
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: DEFAULT_BACKUP_RESOURCES
    )


@dataclass(frozen=True)
class CaReference:
    """A PEM CA certificate in a Secret's or ConfigMap's key, in the resource's namespace."""

    kind: str  # Secret or ConfigMap
    name: str
    key: str


def parse_disruption(spec: Mapping[str, Any]) -> DisruptionSpec:
    """``spec.disruption``."""
    disruption = fields.mapping(spec, "disruption", "spec.disruption")
    return DisruptionSpec(
        fields.integer(disruption, "maxUnavailable", "spec.disruption.maxUnavailable", 1, 0, 1000)
    )


def parse_autoscaling(spec: Mapping[str, Any]) -> AutoscalingSpec | None:
    """``spec.autoscaling``, or None when absent."""
    if spec.get("autoscaling") is None:
        return None
    autoscaling = fields.mapping(spec, "autoscaling", "spec.autoscaling")
    if "maxReplicas" not in autoscaling:
        raise SpecError("spec.autoscaling.maxReplicas", "is required")
    parsed = AutoscalingSpec(
        min_replicas=fields.integer(
            autoscaling, "minReplicas", "spec.autoscaling.minReplicas", 1, 1, 1000
        ),
        max_replicas=fields.integer(
            autoscaling, "maxReplicas", "spec.autoscaling.maxReplicas", 1, 1, 1000
        ),
        target_cpu_percent=fields.integer(
            autoscaling,
            "targetCPUUtilizationPercentage",
            "spec.autoscaling.targetCPUUtilizationPercentage",
            80,
            1,
            100,
        ),
    )
    if parsed.min_replicas > parsed.max_replicas:
        raise SpecError("spec.autoscaling.minReplicas", "must not exceed maxReplicas")
    return parsed


def parse_metrics(spec: Mapping[str, Any]) -> MetricsSpec:
    """``spec.metrics``."""
    metrics = fields.mapping(spec, "metrics", "spec.metrics")
    return MetricsSpec(fields.boolean(metrics, "serviceMonitor", "spec.metrics.serviceMonitor"))


def parse_ingress(spec: Mapping[str, Any]) -> IngressSpec | None:
    """``spec.ingress``, or None when absent."""
    if spec.get("ingress") is None:
        return None
    ingress = fields.mapping(spec, "ingress", "spec.ingress")
    host = fields.string(ingress, "host", "spec.ingress.host", "")
    if not _HOST.match(host):
        raise SpecError("spec.ingress.host", "must be a DNS name")
    path = fields.string(ingress, "path", "spec.ingress.path", "/")
    if not path.startswith("/"):
        raise SpecError("spec.ingress.path", "must start with /")
    names = {}
    for key in ("className", "tlsSecretName"):
        value = fields.optional_string(ingress, key, f"spec.ingress.{key}")
        if value is not None and not fields.DNS_SUBDOMAIN.match(value):
            raise SpecError(f"spec.ingress.{key}", "must be a DNS subdomain")
        names[key] = value
    return IngressSpec(host, path, names["className"], names["tlsSecretName"])


def parse_external(database: Mapping[str, Any]) -> ExternalDatabaseSpec | None:
    """``spec.database.external``, or None when the bundled database is used."""
    if database.get("external") is None:
        return None
    external = fields.mapping(database, "external", "spec.database.external")
    secret_ref = fields.mapping(external, "secretRef", "spec.database.external.secretRef")
    name = secret_ref.get("name")
    if not (isinstance(name, str) and fields.DNS_SUBDOMAIN.match(name)):
        raise SpecError("spec.database.external.secretRef.name", "must name a Secret")
    sslmode = external.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise SpecError("spec.database.external.sslmode", f"must be one of {', '.join(SSL_MODES)}")
    return ExternalDatabaseSpec(secret_name=name, sslmode=sslmode, ca=_parse_ca(external))


def _parse_ca(external: Mapping[str, Any]) -> CaReference | None:
    given = [field for field in CA_REFERENCES if external.get(field) is not None]
    if not given:
        return None
    if len(given) > 1:
        raise SpecError(
            "spec.database.external", "caSecretRef and caConfigMapRef exclude each other"
        )
    path = f"spec.database.external.{given[0]}"
    reference = fields.mapping(external, given[0], path)
    name, key = reference.get("name"), reference.get("key")
    if not (isinstance(name, str) and fields.DNS_SUBDOMAIN.match(name)):
        raise SpecError(f"{path}.name", f"must name a {CA_REFERENCES[given[0]]}")
    if not (isinstance(key, str) and _DATA_KEY.match(key)):
        raise SpecError(f"{path}.key", "must be a key of its data")
    return CaReference(CA_REFERENCES[given[0]], name, key)


def parse_backup(database: Mapping[str, Any]) -> BackupSpec | None:
    """``spec.database.backup``, or None when no backup is asked for."""
    if database.get("backup") is None:
        return None
    if database.get("external") is not None:
        raise SpecError(
            "spec.database.backup",
            "is for the bundled database only: back up your external database yourself",
        )
    backup = fields.mapping(database, "backup", "spec.database.backup")
    schedule = backup.get("schedule")
    if schedule is None:
        raise SpecError("spec.database.backup.schedule", "is required")
    if not isinstance(schedule, str) or not CRON_SCHEDULE.match(schedule.strip()):
        raise SpecError(
            "spec.database.backup.schedule",
            "must be a cron schedule of five fields (such as '0 3 * * *') or a macro (@daily)",
        )
    storage = fields.mapping(backup, "storage", "spec.database.backup.storage")
    size = fields.string(storage, "size", "spec.database.backup.storage.size", "1Gi")
    if not fields.QUANTITY.match(size) or size.endswith("m"):
        raise SpecError("spec.database.backup.storage.size", "must be a quantity such as 1Gi")
    class_name = fields.optional_string(
        storage, "storageClassName", "spec.database.backup.storage.storageClassName"
    )
    if class_name is not None and not fields.DNS_SUBDOMAIN.match(class_name):
        raise SpecError("spec.database.backup.storage.storageClassName", "must name a StorageClass")
    return BackupSpec(
        schedule=schedule.strip(),
        retention=fields.integer(
            backup, "retention", "spec.database.backup.retention", DEFAULT_BACKUP_RETENTION, 1, 365
        ),
        size=size,
        storage_class_name=class_name,
        resources=fields.resources(
            backup, "spec.database.backup.resources", DEFAULT_BACKUP_RESOURCES
        ),
    )
