"""Names, labels and owner references shared by every child of a BlacklistService.

Names are derived from the parent only (SPEC §5), so a restarted operator finds
the same objects again and never creates duplicates.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator import API_VERSION, FIELD_MANAGER, KIND
from blacklist_operator.model import BlacklistService

APP_NAME = "blacklist-service"
OPERATOR_APP_NAME = "blacklist-operator"
COMPONENT_SERVICE = "service"
COMPONENT_DATABASE = "database"
COMPONENT_BANLIST = "banlist"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
INSTANCE_LABEL = "app.kubernetes.io/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
# On a pod template: the uid of the Secret N-db its pods take their credentials from.
CREDENTIALS_ANNOTATION = "blacklist.dev/database-secret-uid"

# The ban list spreads over at most this many ConfigMaps (docs/CONTRACTS.md).
MAX_BANLIST_SHARDS = 16
POSTGRES_PORT = 5432


def service_name(bls: BlacklistService) -> str:
    """Name of the service Deployment, its Service and its ServiceAccount."""
    return bls.name


def database_name(bls: BlacklistService) -> str:
    """Name of the PostgreSQL Deployment, Service, PVC and NetworkPolicy."""
    return f"{bls.name}-postgres"


def database_settings_name(bls: BlacklistService) -> str:
    """Name of the ConfigMap and Secret with the database settings."""
    return f"{bls.name}-db"


def persistent_volume_name(bls: BlacklistService) -> str:
    """Name of the static hostPath PersistentVolume (cluster-scoped, hence the namespace)."""
    return f"{bls.namespace}-{bls.name}-postgres"


def banlist_reader_name(bls: BlacklistService) -> str:
    """Name of the Role and RoleBinding that let the service read its ban list."""
    return f"{bls.name}-banlist-reader"


def banlist_shard_name(instance: str, index: int) -> str:
    """Name of ban-list shard ``index``: ``N-banlist``, then ``N-banlist-1`` ..."""
    return f"{instance}-banlist" if index == 0 else f"{instance}-banlist-{index}"


def selector_labels(bls: BlacklistService, component: str) -> dict[str, str]:
    """The labels a selector matches on: name, instance and component."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        INSTANCE_LABEL: bls.name,
        COMPONENT_LABEL: component,
    }


def labels(bls: BlacklistService, component: str) -> dict[str, str]:
    """Every label of a child (SPEC §5), including the ones the operator watches by."""
    return {
        **selector_labels(bls, component),
        MANAGED_BY_LABEL: FIELD_MANAGER,
        "app.kubernetes.io/part-of": APP_NAME,
    }


def owner_reference(bls: BlacklistService) -> dict[str, Any]:
    """The controller owner reference that makes the garbage collector delete a child."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": bls.name,
        "uid": bls.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(
    bls: BlacklistService, name: str, component: str, *, owned: bool = True
) -> dict[str, Any]:
    """Metadata of a namespaced child; ``owned=False`` leaves it to outlive the parent."""
    result: dict[str, Any] = {
        "name": name,
        "namespace": bls.namespace,
        "labels": labels(bls, component),
    }
    if owned:
        result["ownerReferences"] = [owner_reference(bls)]
    return result


def pod_metadata(
    bls: BlacklistService, component: str, credentials: str | None = None
) -> dict[str, Any]:
    """Metadata of a pod template: its selector labels and the Secret uid it was built for.

    Environment taken from a Secret is read once, when a container starts: a new
    uid in the template restarts the pods onto a Secret that was recreated.
    """
    result: dict[str, Any] = {"labels": selector_labels(bls, component)}
    if credentials is not None:
        result["annotations"] = {CREDENTIALS_ANNOTATION: credentials}
    return result
