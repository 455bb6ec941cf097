"""Where a resource's database credentials come from, read at each reconcile.

For the bundled database, Secret ``N-db``: generated once, an existing one adopted,
its owner reference kept in line with ``retainOnDelete``. For
``spec.database.external``, the Secret it names, read by name and parsed.
"""

from __future__ import annotations

from typing import Any

from blacklist_operator.builders import build_database_secret
from blacklist_operator.builders.credentials import (
    generate_password,
    managed_secret,
    secret_owner_references,
)
from blacklist_operator.builders.naming import database_name, database_settings_name
from blacklist_operator.kube.api import ApiError, KubernetesApi
from blacklist_operator.model.external import (
    DatabaseSecretError,
    ExternalDatabase,
    HostRule,
    ca_certificate,
    check_host_allowed,
    parse_database_secret,
)
from blacklist_operator.model.resource import BlacklistService
from blacklist_operator.reconcile.outcome import Outcome, namespace_terminating
from blacklist_operator.runtime.state import Logger


def ensure_secret(
    api: KubernetesApi, resource: BlacklistService, logger: Logger, outcome: Outcome
) -> dict[str, Any]:
    """Make sure Secret ``N-db`` exists and return it; an existing one is adopted as is.

    A missing Secret is generated. When the claim ``N-postgres`` already exists the
    volume may hold a ledger whose role has the lost password: the new one is
    applied by the database's init container when the new Secret's uid restarts it
    (see ``build_set_password_container``), and a Warning Event says so. Of a Secret
    we generated, only the owner reference is kept in line with ``retainOnDelete``.
    """
    name = database_settings_name(resource)
    existing = api.get("v1", "Secret", resource.namespace, name)
    if existing is None:
        claim = api.get("v1", "PersistentVolumeClaim", resource.namespace, database_name(resource))
        created = api.create(build_database_secret(resource, generate_password()))
        if created is not None:
            outcome.created.append(f"Secret {name}")
            if claim is None:
                logger.info(f"Created Secret {name} with a generated password")
            else:
                message = (
                    f"Secret {name} was missing while PersistentVolumeClaim "
                    f"{database_name(resource)} exists: generated a new password; the database "
                    "restarts and its init container set-password gives it to the existing role "
                    "(an image without psql/pg_ctl cannot: restore the old Secret instead)"
                )
                logger.warning(message)
                outcome.warnings.append(("CredentialsRegenerated", message))
            return created
        # Someone (another reconcile of ours) created it in between: adopt theirs.
        existing = api.get("v1", "Secret", resource.namespace, name)
    if existing is None:
        raise ApiError(409, f"Secret {name} was deleted while it was being created")
    data = existing.get("data") or {}
    if "username" not in data or "password" not in data:
        raise ApiError(422, f"Secret {name} must hold the keys username and password")
    if managed_secret(existing):
        metadata = existing.get("metadata") or {}
        current = list(metadata.get("ownerReferences") or [])
        wanted = secret_owner_references(resource, current)
        if wanted != current:
            existing = api.merge_patch(
                "v1",
                "Secret",
                resource.namespace,
                name,
                {
                    "metadata": {
                        "ownerReferences": wanted,
                        "resourceVersion": metadata.get("resourceVersion"),
                    }
                },
            )
            logger.info(f"Secret {name} is now {'owned' if wanted else 'kept with the data'}")
    return existing


def read_external_database(
    api: KubernetesApi, resource: BlacklistService, allowed_hosts: tuple[HostRule, ...] = ()
) -> ExternalDatabase:
    """The external database's Secret, read by name and parsed (DatabaseSecretError if unusable).

    The Secret is not watched (RBAC would need list/watch on every Secret of the
    namespace): it is read at each reconcile, and by the ban sync when it connects.
    A host outside ``allowed_hosts`` raises ``DatabaseHostNotAllowedError``.
    """
    external = resource.spec.database.external
    if external is None:
        raise DatabaseSecretError("spec.database.external is not set")
    secret = api.get("v1", "Secret", resource.namespace, external.secret_name)
    database = parse_database_secret(external, resource.spec.database.name, secret)
    check_host_allowed(database, allowed_hosts)
    # A CA missing would leave the service's pods waiting for their volume: say it here.
    read_ca_certificate(api, resource)
    return database


def read_ca_certificate(api: KubernetesApi, resource: BlacklistService) -> str | None:
    """The external database's CA certificate (PEM), read by name; None when none is set.

    Raises DatabaseSecretError when the Secret or ConfigMap, or its key, is missing.
    """
    external = resource.spec.database.external
    if external is None or external.ca is None:
        return None
    body = api.get("v1", external.ca.kind, resource.namespace, external.ca.name)
    return ca_certificate(external.ca, body)


def database_credentials(
    api: KubernetesApi,
    resource: BlacklistService,
    logger: Logger,
    outcome: Outcome,
    allowed_hosts: tuple[HostRule, ...] = (),
) -> tuple[str | None, ExternalDatabase | None]:
    """The uid of Secret ``N-db`` (bundled database), or the parsed external Secret."""
    if resource.spec.database.external is not None:
        try:
            return None, read_external_database(api, resource, allowed_hosts)
        except DatabaseSecretError as error:
            outcome.database_secret_problem = str(error)
            outcome.database_secret_reason = error.reason
        except ApiError as error:
            outcome.failures.append(
                f"Secret {resource.spec.database.external.secret_name}: {error}"
            )
        return None, None
    try:
        secret = ensure_secret(api, resource, logger, outcome)
        return (secret.get("metadata") or {}).get("uid"), None
    except ApiError as error:
        if namespace_terminating(error):
            outcome.namespace_terminating = True
        else:
            outcome.failures.append(f"Secret {database_settings_name(resource)}: {error}")
    return None, None
