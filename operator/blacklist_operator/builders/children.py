"""Every applied child of a BlacklistService, in the order they are applied.

The Secret (created once, never applied) and the ban-list ConfigMaps (written by
the ban sync) are not in this list. The optional children (PodDisruptionBudget,
HorizontalPodAutoscaler, Ingress, the metrics Service, the ServiceMonitor and the
backup CronJob) are in it when the spec asks for them, and in :func:`absent_children`,
to be deleted, when it does not. The backup's claim is applied while a backup is
asked for and never deleted: it outlives the CronJob and the resource. With an external
database (``spec.database.external``) there is no database Deployment, Service,
claim, volume or NetworkPolicy at all: ConfigMap ``N-db`` points at that database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from blacklist_operator.builders.availability import (
    build_horizontal_pod_autoscaler,
    build_pod_disruption_budget,
)
from blacklist_operator.builders.backup import build_backup_claim, build_backup_cronjob
from blacklist_operator.builders.database import (
    DEFAULT_HOST_PATH_INIT_IMAGE,
    build_database_configmap,
    build_database_deployment,
    build_database_network_policy,
    build_database_service,
)
from blacklist_operator.builders.ingress import build_ingress
from blacklist_operator.builders.monitoring import (
    SERVICE_MONITOR_API_VERSION,
    build_metrics_service,
    build_service_monitor,
)
from blacklist_operator.builders.naming import backup_name, metrics_service_name, service_name
from blacklist_operator.builders.rbac import build_role, build_role_binding, build_service_account
from blacklist_operator.builders.service import build_service, build_service_deployment
from blacklist_operator.builders.storage import (
    build_persistent_volume,
    build_persistent_volume_claim,
)
from blacklist_operator.model.external import ExternalDatabase
from blacklist_operator.model.resource import BlacklistService

# (apiVersion, kind, name, builder) of each optional child; a builder returns None when
# the spec does not ask for its child.
_OPTIONAL: tuple[
    tuple[
        str,
        str,
        Callable[[BlacklistService], str],
        Callable[[BlacklistService], dict[str, Any] | None],
    ],
    ...,
] = (
    ("networking.k8s.io/v1", "Ingress", service_name, build_ingress),
    ("policy/v1", "PodDisruptionBudget", service_name, build_pod_disruption_budget),
    ("autoscaling/v2", "HorizontalPodAutoscaler", service_name, build_horizontal_pod_autoscaler),
    ("v1", "Service", metrics_service_name, build_metrics_service),
    # A CRD's kind: applied only while the API serves it (reconcile.served_children).
    (SERVICE_MONITOR_API_VERSION, "ServiceMonitor", service_name, build_service_monitor),
    ("batch/v1", "CronJob", backup_name, build_backup_cronjob),
)
# Kinds of CRDs a cluster may lack: applied (and looked for) only while the API serves them.
CUSTOM_KINDS = frozenset({"ServiceMonitor"})


def build_children(
    resource: BlacklistService,
    operator_namespace: str | None = None,
    credentials: str | None = None,
    volume_name: str | None = None,
    external: ExternalDatabase | None = None,
    host_path_init_image: str = DEFAULT_HOST_PATH_INIT_IMAGE,
) -> list[dict[str, Any]]:
    """The manifests to apply; volumes and settings before the pods that use them.

    ``operator_namespace`` is where the operator's own pods run (None outside the cluster);
    ``credentials`` is the uid of Secret ``N-db``, which marks both pod templates (None
    leaves the mark out, as the drift check does, which does not read the Secret);
    ``volume_name`` is the static PV the claim is bound to, if not the default name.
    ``external`` is the parsed Secret of ``spec.database.external``; while it is None
    (the Secret missing or invalid) ConfigMap ``N-db`` and the service Deployment,
    which depend on it, are left out and stay as they are. ``host_path_init_image`` is
    the admin's image for the hostPath ``own-data`` init container.
    """
    if resource.spec.database.external is not None:
        database = [] if external is None else [build_database_configmap(resource, external)]
        service = [] if external is None else [build_service_deployment(resource, None, external)]
    else:
        volume = build_persistent_volume(resource, volume_name)
        backup_claim = build_backup_claim(resource)
        database = [
            *([volume] if volume is not None else []),
            build_persistent_volume_claim(resource, volume_name),
            *([backup_claim] if backup_claim is not None else []),
            build_database_configmap(resource),
            build_database_service(resource),
            build_database_network_policy(resource, operator_namespace),
            build_database_deployment(resource, credentials, host_path_init_image),
        ]
        service = [build_service_deployment(resource, credentials)]
    return [
        *database,
        build_service_account(resource),
        build_role(resource),
        build_role_binding(resource),
        build_service(resource),
        *service,
        *(child for _, _, _, build in _OPTIONAL if (child := build(resource)) is not None),
    ]


def absent_children(resource: BlacklistService) -> list[tuple[str, str, str]]:
    """(apiVersion, kind, name) of the optional children the spec does not ask for."""
    return [
        (api_version, kind, name(resource))
        for api_version, kind, name, build in _OPTIONAL
        if build(resource) is None
    ]


def optional_children(resource: BlacklistService) -> frozenset[tuple[str, str]]:
    """(kind, name) of every optional child, asked for or not, and of the backup's claim."""
    return frozenset(
        {
            *((kind, name(resource)) for _, kind, name, _ in _OPTIONAL),
            ("PersistentVolumeClaim", backup_name(resource)),
        }
    )


def child_key(manifest: dict[str, Any]) -> tuple[str, str]:
    """(kind, name): how the drift cache and the watchers identify a child."""
    return manifest["kind"], manifest["metadata"]["name"]
