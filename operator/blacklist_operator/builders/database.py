"""The PostgreSQL child: Deployment, Service, storage, settings and the policy guarding it."""

from __future__ import annotations

import base64
import secrets
import string
from typing import Any

from blacklist_operator.builders.naming import (
    COMPONENT_DATABASE,
    COMPONENT_SERVICE,
    OPERATOR_APP_NAME,
    POSTGRES_PORT,
    database_name,
    database_settings_name,
    labels,
    metadata,
    persistent_volume_name,
    selector_labels,
)
from blacklist_operator.builders.security import (
    POSTGRES_UID,
    container_security_context,
    pod_security_context,
    resource_requirements,
)
from blacklist_operator.model import BlacklistService

DATA_MOUNT = "/var/lib/postgresql/data"
# A subfolder, because initdb refuses a mount point that holds lost+found.
PGDATA = f"{DATA_MOUNT}/pgdata"
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32


def database_host(bls: BlacklistService) -> str:
    """In-cluster DNS name of the database Service."""
    return f"{database_name(bls)}.{bls.namespace}.svc"


def generate_password() -> str:
    """A random password of letters and digits, so a URL needs no escaping."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def build_database_configmap(bls: BlacklistService) -> dict[str, Any]:
    """ConfigMap ``N-db``: where the database is, never its credentials."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(bls, database_settings_name(bls), COMPONENT_DATABASE),
        "data": {
            "host": database_host(bls),
            "port": str(POSTGRES_PORT),
            "database": bls.spec.database.name,
        },
    }


def build_database_secret(bls: BlacklistService, password: str) -> dict[str, Any]:
    """Secret ``N-db``; kept with the data (no owner) when the storage is retained."""
    owned = not bls.spec.database.storage.retain_on_delete
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(bls, database_settings_name(bls), COMPONENT_DATABASE, owned=owned),
        "data": {
            "username": base64.b64encode(bls.spec.database.user.encode()).decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    }


def _secret_key(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def build_database_deployment(bls: BlacklistService) -> dict[str, Any]:
    """The PostgreSQL Deployment ``N-postgres``: one replica, recreated rather than rolled."""
    settings = database_settings_name(bls)
    database = bls.spec.database
    pg_isready = ["sh", "-c", 'exec pg_isready -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"']
    container = {
        "name": "postgres",
        "image": database.image,
        "imagePullPolicy": bls.spec.image_pull_policy,
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "env": [
            {
                "name": "POSTGRES_DB",
                "valueFrom": {"configMapKeyRef": {"name": settings, "key": "database"}},
            },
            _secret_key("POSTGRES_USER", settings, "username"),
            _secret_key("POSTGRES_PASSWORD", settings, "password"),
            {"name": "PGDATA", "value": PGDATA},
        ],
        "readinessProbe": {
            "exec": {"command": pg_isready},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "exec": {"command": pg_isready},
            "initialDelaySeconds": 30,
            "periodSeconds": 15,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": resource_requirements(database.resources),
        # PostgreSQL writes only to PGDATA, its socket directory and /tmp: with those
        # on volumes the root filesystem can be read-only.
        "securityContext": container_security_context(read_only_root=True),
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_MOUNT},
            {"name": "run", "mountPath": "/var/run/postgresql"},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(bls, database_name(bls), COMPONENT_DATABASE),
        "spec": {
            "replicas": 1,
            # Two pods must never share one data directory: stop the old one first.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector_labels(bls, COMPONENT_DATABASE)},
            "template": {
                "metadata": {"labels": selector_labels(bls, COMPONENT_DATABASE)},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": pod_security_context(POSTGRES_UID),
                    "containers": [container],
                    "volumes": [
                        {
                            "name": "data",
                            "persistentVolumeClaim": {"claimName": database_name(bls)},
                        },
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def build_database_service(bls: BlacklistService) -> dict[str, Any]:
    """The ClusterIP Service ``N-postgres`` on 5432, not exposed outside the cluster."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(bls, database_name(bls), COMPONENT_DATABASE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(bls, COMPONENT_DATABASE),
            "ports": [
                {
                    "name": "postgres",
                    "port": POSTGRES_PORT,
                    "targetPort": "postgres",
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_persistent_volume_claim(bls: BlacklistService) -> dict[str, Any]:
    """PVC ``N-postgres``; without an owner when it must outlive the BlacklistService."""
    storage = bls.spec.database.storage
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.size}},
    }
    if storage.host_path is not None:
        # Bind to our static volume only; "" keeps the default class's provisioner away.
        spec["storageClassName"] = ""
        spec["volumeName"] = persistent_volume_name(bls)
    elif storage.storage_class_name is not None:
        spec["storageClassName"] = storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(
            bls, database_name(bls), COMPONENT_DATABASE, owned=not storage.retain_on_delete
        ),
        "spec": spec,
    }


def build_persistent_volume(bls: BlacklistService) -> dict[str, Any] | None:
    """The static hostPath PV ``NS-N-postgres``, or ``None`` when no hostPath is asked for.

    A cluster-scoped object cannot be owned by a namespaced one, so the PV is
    released by the operator's finalizer instead of the garbage collector.
    """
    storage = bls.spec.database.storage
    if storage.host_path is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": persistent_volume_name(bls),
            "labels": labels(bls, COMPONENT_DATABASE),
            "annotations": {"blacklist.dev/owner": f"{bls.namespace}/{bls.name}"},
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
                "namespace": bls.namespace,
                "name": database_name(bls),
            },
        },
    }


def build_database_network_policy(
    bls: BlacklistService, operator_namespace: str | None = None
) -> dict[str, Any]:
    """Admit only the service's pods and the operator's pods to PostgreSQL.

    The operator's pods only from ``operator_namespace``, its own: a label is all
    another team would need to pass for the operator. An operator that runs
    outside the cluster (no namespace) is no pod, so no pod is admitted in its name.
    """
    sources: list[dict[str, Any]] = [
        {"podSelector": {"matchLabels": selector_labels(bls, COMPONENT_SERVICE)}}
    ]
    if operator_namespace is not None:
        sources.append(
            {
                # The operator syncs the ban list from the ledger.
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": operator_namespace}
                },
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": OPERATOR_APP_NAME}},
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(bls, database_name(bls), COMPONENT_DATABASE),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(bls, COMPONENT_DATABASE)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": sources,
                    "ports": [{"protocol": "TCP", "port": POSTGRES_PORT}],
                }
            ],
        },
    }
