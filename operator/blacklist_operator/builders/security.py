"""Security contexts shared by the pods we build: non-root, no privileges, no capabilities."""

from __future__ import annotations

from typing import Any

# The service image runs as this user (Dockerfile.service); PostgreSQL's
# official image owns its data as uid/gid 999.
SERVICE_UID = 10001
POSTGRES_UID = 999


def pod_security_context(uid: int) -> dict[str, Any]:
    """Pod-level context: a fixed non-root user, and volumes writable by its group."""
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(*, read_only_root: bool) -> dict[str, Any]:
    """Container-level context: no privilege escalation and every capability dropped."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def resource_requirements(resources: Any) -> dict[str, dict[str, str]]:
    """A plain copy of a parsed requests/limits mapping."""
    return {group: dict(values) for group, values in resources.items() if values}
