"""Secret ``N-db``: the database credentials, generated once, and whether the resource owns it."""

from __future__ import annotations

import base64
import secrets
import string
from typing import Any

from blacklist_operator import API_VERSION, FIELD_MANAGER, KIND
from blacklist_operator.builders.naming import (
    COMPONENT_DATABASE,
    MANAGED_BY_LABEL,
    database_settings_name,
    metadata,
    owner_reference,
)
from blacklist_operator.model.resource import BlacklistService

PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32


def generate_password() -> str:
    """A random password of letters and digits, so a URL needs no escaping."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))


def build_database_secret(resource: BlacklistService, password: str) -> dict[str, Any]:
    """Secret ``N-db``; kept with the data (no owner) when the storage is retained."""
    owned = secret_owned(resource)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": metadata(
            resource, database_settings_name(resource), COMPONENT_DATABASE, owned=owned
        ),
        "data": {
            "username": base64.b64encode(resource.spec.database.user.encode()).decode(),
            "password": base64.b64encode(password.encode()).decode(),
        },
    }


def secret_owned(resource: BlacklistService) -> bool:
    """Whether Secret ``N-db`` is collected with the BlacklistService (not when data is kept)."""
    return not resource.spec.database.storage.retain_on_delete


def managed_secret(secret: dict[str, Any]) -> bool:
    """Whether the operator generated this Secret (an adopted one is never changed)."""
    secret_labels = (secret.get("metadata") or {}).get("labels") or {}
    return bool(secret_labels.get(MANAGED_BY_LABEL) == FIELD_MANAGER)


def secret_owner_references(
    resource: BlacklistService, current: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The owner references a generated Secret ``N-db`` should have, others' kept as they are.

    Ours follows ``retainOnDelete`` as it is now, not as it was at creation: a Secret
    still owned after the flag was set would be collected with the resource and leave
    the retained ledger without its password.
    """
    others = [
        reference
        for reference in current
        if not (reference.get("kind") == KIND and reference.get("apiVersion") == API_VERSION)
    ]
    return [*others, owner_reference(resource)] if secret_owned(resource) else others
