"""What one reconcile did, for the Events and metrics that follow it.

Also the one API refusal a reconcile treats apart: a creation in a namespace being
deleted, where there is nothing left to do and nothing to report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blacklist_operator.kube.api import ApiError


@dataclass
class Outcome:
    """What a reconcile did, for the handler's Events."""

    created: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # (reason, message) of Warning Events: what a user must know even when it healed.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    # (reason, message) of Normal Events: a roll onto the operator's default images starts or waits.
    notices: list[tuple[str, str]] = field(default_factory=list)
    # Waiting for its turn to roll, and the next in line: reconcile again soon.
    rollout_retry: bool = False
    ready: bool = False
    first: bool = False
    # Why the Secret of spec.database.external cannot be used (Ready=False DatabaseSecretInvalid),
    # and the reason: DatabaseHostNotAllowed when it names a host the admin does not allow.
    database_secret_problem: str | None = None
    database_secret_reason: str = "DatabaseSecretInvalid"  # noqa: S105 (a condition reason)
    # Children not applied because an object of that name is someone else's (ChildConflict).
    conflicts: list[str] = field(default_factory=list)
    # The namespace is being deleted: nothing can be created in it, nothing is reported.
    namespace_terminating: bool = False


def namespace_terminating(error: ApiError) -> bool:
    """Whether ``error`` is the API refusing a creation in a namespace being deleted."""
    return error.status == 403 and "because it is being terminated" in str(error)


def describe(manifest: Mapping[str, Any]) -> str:
    """``Kind name`` of a manifest, as Events and logs name it."""
    return f"{manifest['kind']} {manifest['metadata']['name']}"
