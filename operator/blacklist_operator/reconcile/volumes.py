"""The static hostPath PersistentVolume: which one a resource uses, whose it is, releasing it.

A PV is cluster-scoped, so before it applies or deletes one the operator checks
that its owner annotation and managed-by label are this resource's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blacklist_operator.builders.naming import (
    VOLUME_OWNER_ANNOTATION,
    database_name,
    persistent_volume_name,
    volume_belongs_to,
)
from blacklist_operator.kube.api import ApiError, KubernetesApi
from blacklist_operator.model.resource import BlacklistService, SpecError, parse
from blacklist_operator.runtime.state import Logger, Runtime


def static_volume_name(api: KubernetesApi, resource: BlacklistService) -> str | None:
    """The static PV of a hostPath resource: its own name, or an older one it already owns.

    A claim's volumeName is immutable, so a claim bound under an earlier naming keeps
    its volume, but only one that exists and is this resource's. The name never comes
    from the claim alone: anyone who may create claims in the namespace could name
    another tenant's future volume there, and have the operator create it for them.
    """
    if resource.spec.database.storage.host_path is None:
        return None
    own = persistent_volume_name(resource)
    claim = api.get("v1", "PersistentVolumeClaim", resource.namespace, database_name(resource))
    bound = ((claim or {}).get("spec") or {}).get("volumeName")
    if not bound or bound == own:
        return own
    volume = api.get("v1", "PersistentVolume", None, str(bound))
    return str(bound) if volume is not None and volume_belongs_to(volume, resource) else own


def kept_volume_path(
    api: KubernetesApi, resource: BlacklistService, name: str | None
) -> str | None:
    """The node path of the resource's own PV ``name`` if it exists (its source is immutable).

    A PV made before the operator chose the directories keeps the path the resource
    named; every new one gets :func:`~blacklist_operator.model.resource.host_path_directory`.
    """
    if name is None:
        return None
    volume = api.get("v1", "PersistentVolume", None, name)
    if volume is None or not volume_belongs_to(volume, resource):
        return None
    path = (((volume.get("spec") or {}).get("hostPath")) or {}).get("path")
    return str(path) if path else None


def check_volume_owner(api: KubernetesApi, resource: BlacklistService, name: str) -> None:
    """Refuse (ApiError 409) a PersistentVolume of that name that is not this resource's.

    PVs are cluster-scoped: a forced apply would take over another's volume and claim.
    """
    existing = api.get("v1", "PersistentVolume", None, name)
    if existing is not None and not volume_belongs_to(existing, resource):
        owner = ((existing.get("metadata") or {}).get("annotations") or {}).get(
            VOLUME_OWNER_ANNOTATION, "someone else"
        )
        raise ApiError(409, f"it exists and belongs to {owner}: left alone")


def release_storage(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> None:
    """On deletion: delete our static PersistentVolume unless the data is to be retained."""
    try:
        resource = parse(body)
    except SpecError:
        return
    storage = resource.spec.database.storage
    if storage.host_path is None or storage.retain_on_delete:
        return
    name = static_volume_name(runtime.api, resource)
    if name is None:
        return
    try:
        volume = runtime.api.get("v1", "PersistentVolume", None, name)
    except ApiError as error:
        if error.status != 403:
            raise
        # Without rights on PersistentVolumes (rbac.persistentVolumes=false) none was created.
        logger.warning(f"Cannot read PersistentVolume {name}: {error}; nothing released")
        return
    if volume is None:
        return
    if not volume_belongs_to(volume, resource):
        logger.warning(f"PersistentVolume {name} is not this resource's: left alone")
        return
    if runtime.api.delete("v1", "PersistentVolume", None, name):
        logger.info(f"Released PersistentVolume {name}")
