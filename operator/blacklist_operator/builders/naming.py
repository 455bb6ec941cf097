"""Names, labels and owner references shared by every child of a BlacklistService.

Names are derived from the parent only (docs/architecture.md, "What the operator creates"), so
a restarted operator finds the same objects again and never creates duplicates.
"""

from __future__ import annotations

import hashlib
from typing import Any

from blacklist_contract.wire import head_name, part_name
from blacklist_operator import API_VERSION, FIELD_MANAGER, KIND
from blacklist_operator.model.resource import BlacklistService

APP_NAME = "blacklist-service"
OPERATOR_APP_NAME = "blacklist-operator"
COMPONENT_SERVICE = "service"
COMPONENT_DATABASE = "database"
COMPONENT_BANLIST = "banlist"
# The CronJob N-backup, its pods and its claim.
COMPONENT_BACKUP = "backup"
# The Service N-metrics: its own component, so that a ServiceMonitor selects it and not Service N.
COMPONENT_METRICS = "metrics"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
# On a pod template: the uid of the Secret N-db its pods take their credentials from.
CREDENTIALS_ANNOTATION = "blacklist.dev/database-secret-uid"
# On the service's pod template with an external database: a digest of its Secret's data,
# so an edited Secret (same uid, new values) rolls the pods too.
EXTERNAL_SECRET_ANNOTATION = "blacklist.dev/database-secret-checksum"  # noqa: S105

POSTGRES_PORT = 5432


def service_name(resource: BlacklistService) -> str:
    """Name of the service Deployment, its Service and its ServiceAccount."""
    return service_name_of(resource.name)


def service_name_of(instance: str) -> str:
    """:func:`service_name` of the instance named ``instance`` (for callers without a spec)."""
    return instance


def metrics_service_name(resource: BlacklistService) -> str:
    """Name of the Service that exposes the service pods' metrics port inside the cluster."""
    return f"{resource.name}-metrics"


def database_name(resource: BlacklistService) -> str:
    """Name of the PostgreSQL Deployment, Service, PVC and NetworkPolicy."""
    return database_name_of(resource.name)


def database_name_of(instance: str) -> str:
    """:func:`database_name` of the instance named ``instance`` (for callers without a spec)."""
    return f"{instance}-postgres"


def backup_name(resource: BlacklistService) -> str:
    """Name of the backup CronJob and of the claim its dumps are kept on."""
    return f"{resource.name}-backup"


def database_settings_name(resource: BlacklistService) -> str:
    """Name of the ConfigMap and Secret with the database settings."""
    return f"{resource.name}-db"


# On a static PersistentVolume: who it belongs to, "NS/N" (a PV has no namespace or owner).
VOLUME_OWNER_ANNOTATION = "blacklist.dev/owner"
VOLUME_NAMESPACE_LABEL = "blacklist.dev/namespace"
# The readable head of a PV name; with "-" and the digest a name stays within 63 characters.
_VOLUME_NAME_HEAD = 46
_VOLUME_NAME_DIGEST = 16


def persistent_volume_name(resource: BlacklistService) -> str:
    """Name of the static hostPath PersistentVolume: unique per namespace and name.

    A PV is cluster-scoped, so ``NS-N-postgres`` alone would let ``team-a``/``db``
    and ``team``/``a-db`` collide: a digest of ``NS/N`` ("/" occurs in neither)
    makes it unique, behind a readable head. It depends on the namespace and name
    only, not the uid, so a resource recreated over its retained volume finds it.
    """
    digest = hashlib.sha256(f"{resource.namespace}/{resource.name}".encode()).hexdigest()
    head = f"{resource.namespace}-{resource.name}"[:_VOLUME_NAME_HEAD].rstrip("-.")
    return f"{head}-{digest[:_VOLUME_NAME_DIGEST]}"


def volume_owner(resource: BlacklistService) -> str:
    """The owner annotation value of the resource's static PersistentVolume."""
    return f"{resource.namespace}/{resource.name}"


def volume_belongs_to(volume: dict[str, Any], resource: BlacklistService) -> bool:
    """Whether an existing PersistentVolume is this resource's (so it may apply or delete it)."""
    metadata = volume.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    volume_labels = metadata.get("labels") or {}
    return (
        annotations.get(VOLUME_OWNER_ANNOTATION) == volume_owner(resource)
        and volume_labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER
    )


def banlist_reader_name(resource: BlacklistService) -> str:
    """Name of the Role and RoleBinding that let the service read its ban list."""
    return f"{resource.name}-banlist-reader"


def banlist_shard_name(instance: str, index: int) -> str:
    """Name of ban-list ConfigMap ``index``: the head ``N-banlist`` (0), else part ``index``."""
    return head_name(instance) if index == 0 else part_name(instance, index)


def selector_labels(resource: BlacklistService, component: str) -> dict[str, str]:
    """The labels a selector matches on: name, instance and component."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        INSTANCE_LABEL: resource.name,
        COMPONENT_LABEL: component,
    }


def labels(resource: BlacklistService, component: str) -> dict[str, str]:
    """Every label of a child, our watch filter's too.

    See docs/architecture.md, "What the operator creates".
    """
    return {
        **selector_labels(resource, component),
        MANAGED_BY_LABEL: FIELD_MANAGER,
        "app.kubernetes.io/part-of": APP_NAME,
    }


def owner_reference(resource: BlacklistService) -> dict[str, Any]:
    """The controller owner reference that makes the garbage collector delete a child."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": resource.name,
        "uid": resource.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    resource: BlacklistService, name: str, component: str, *, owned: bool = True
) -> dict[str, Any]:
    """Metadata of a namespaced child; ``owned=False`` leaves it to outlive the parent."""
    result: dict[str, Any] = {
        "name": name,
        "namespace": resource.namespace,
        "labels": labels(resource, component),
    }
    if owned:
        result["ownerReferences"] = [owner_reference(resource)]
    return result


def pod_metadata(
    resource: BlacklistService,
    component: str,
    credentials: str | None = None,
    annotation: str = CREDENTIALS_ANNOTATION,
) -> dict[str, Any]:
    """Metadata of a pod template: its selector labels and the Secret it was built for.

    Environment taken from a Secret is read once, when a container starts: a new
    mark (``annotation``: the uid of Secret ``N-db``, or the digest of an external
    database's Secret) in the template restarts the pods onto the Secret as it is now.
    """
    result: dict[str, Any] = {"labels": selector_labels(resource, component)}
    if credentials is not None:
        result["annotations"] = {annotation: credentials}
    return result
