"""The service's identity: a ServiceAccount that may read its own ban list and nothing more."""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders.banlist import banlist_names
from blacklist_operator.builders.naming import (
    COMPONENT_SERVICE,
    banlist_reader_name,
    metadata,
    service_name,
)
from blacklist_operator.model.resource import BlacklistService


def build_service_account(resource: BlacklistService) -> dict[str, Any]:
    """The ServiceAccount ``N`` of the service pods."""
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(resource, service_name(resource), COMPONENT_SERVICE),
    }


def build_role(resource: BlacklistService) -> dict[str, Any]:
    """A Role that reads exactly the ban list's head and its 63 possible parts, by name.

    ``list`` and ``watch`` are limited by ``resourceNames`` too: a replica
    watches the head with a ``metadata.name`` field selector and gets each
    part by name, so it can read no other ConfigMap of the namespace.
    """
    names = banlist_names(resource.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(resource, banlist_reader_name(resource), COMPONENT_SERVICE),
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": names,
                "verbs": ["get", "list", "watch"],
            }
        ],
    }


def build_role_binding(resource: BlacklistService) -> dict[str, Any]:
    """Binds the ban-list reader Role to the service's ServiceAccount."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(resource, banlist_reader_name(resource), COMPONENT_SERVICE),
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Role",
            "name": banlist_reader_name(resource),
        },
        "subjects": [
            {
                "kind": "ServiceAccount",
                "name": service_name(resource),
                "namespace": resource.namespace,
            }
        ],
    }
