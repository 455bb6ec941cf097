"""Whether an existing object is a resource's own child (pure: it reads a body, no I/O).

The reconcile and the ban sync both apply objects whose names are derived from
the resource's name; another team may already have an object of that name in
the namespace. A forced server-side apply would take it over (and the garbage
collector would delete it with the resource), so both ask these first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blacklist_operator import FIELD_MANAGER
from blacklist_operator.builders.naming import INSTANCE_LABEL, MANAGED_BY_LABEL
from blacklist_operator.model.resource import BlacklistService


def owned_by(child: Mapping[str, Any], resource: BlacklistService) -> bool:
    """Whether ``child`` has this BlacklistService as its controller."""
    references = (child.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == resource.uid and ref.get("controller") for ref in references)


def created_by(child: Mapping[str, Any], resource: BlacklistService) -> bool:
    """Whether an existing object is this resource's child, so that applying it takes nothing.

    Ours: labelled managed-by this operator, and either controlled by this resource or
    controlled by none and labelled with its instance (a claim kept by ``retainOnDelete``,
    which outlives the resource that made it, is taken up by its successor).
    """
    metadata = child.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if labels.get(MANAGED_BY_LABEL) != FIELD_MANAGER:
        return False
    references = metadata.get("ownerReferences") or []
    if any(ref.get("controller") for ref in references):
        return owned_by(child, resource)
    return labels.get(INSTANCE_LABEL) == resource.name
