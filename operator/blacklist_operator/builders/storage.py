"""The ledger's storage: PersistentVolumeClaim ``N-postgres`` and, for hostPath, its static PV."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_DATABASE,
    VOLUME_NAMESPACE_LABEL,
    VOLUME_OWNER_ANNOTATION,
    database_name,
    labels,
    metadata,
    persistent_volume_name,
    volume_owner,
)
from blacklist_operator.model.resource import BlacklistService


def build_persistent_volume_claim(
    resource: BlacklistService, volume_name: str | None = None
) -> dict[str, Any]:
    """PVC ``N-postgres``; without an owner when it must outlive the BlacklistService.

    ``volume_name``: the static PV to bind (default :func:`persistent_volume_name`;
    a claim bound before that name existed keeps its volume, since it is immutable).
    """
    storage = resource.spec.database.storage
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.host_path is not None:
        # Bind to our static volume only; "" keeps the default class's provisioner away.
        spec["storageClassName"] = ""
        spec["volumeName"] = volume_name or persistent_volume_name(resource)
    elif storage.storage_class_name is not None:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(
            resource,
            database_name(resource),
            COMPONENT_DATABASE,
            owned=not storage.retain_on_delete,
        ),
        "spec": spec,
    }


def build_persistent_volume(
    resource: BlacklistService, volume_name: str | None = None
) -> dict[str, Any] | None:
    """The static hostPath PV, or ``None`` when no hostPath is asked for.

    A cluster-scoped object cannot be owned by a namespaced one, so the PV is
    released by the operator's finalizer instead of the garbage collector; its
    labels (instance ``N``, namespace ``NS``) and owner annotation say whose it is.
    """
    storage = resource.spec.database.storage
    if storage.host_path is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": volume_name or persistent_volume_name(resource),
            "labels": {
                **labels(resource, COMPONENT_DATABASE),
                VOLUME_NAMESPACE_LABEL: resource.namespace,
            },
            "annotations": {VOLUME_OWNER_ANNOTATION: volume_owner(resource)},
        },
        "spec": {
            "capacity": {"storage": storage.size},
            "accessModes": ["ReadWriteOnce"],
            # Deleting the PV object never deletes the ledger on the node.
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": storage.host_path, "type": "DirectoryOrCreate"},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": resource.namespace,
                "name": database_name(resource),
            },
        },
    }
