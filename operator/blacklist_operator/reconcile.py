"""The one reconcile path: parse the spec, build every child, apply it, report status.

Create, update, resume, the resync timer and the drift watchers all end here.
It is level-based: it never looks at what changed, only at what should be, so
running it twice, or after a crash at any point, converges to the same state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from blacklist_operator import FIELD_MANAGER
from blacklist_operator.apply import ApiError, KubernetesApi
from blacklist_operator.builders import (
    build_children,
    build_condition,
    build_database_secret,
    child_key,
    merge_condition,
)
from blacklist_operator.builders.credentials import (
    generate_password,
    managed_secret,
    secret_owner_references,
)
from blacklist_operator.builders.naming import (
    VOLUME_OWNER_ANNOTATION,
    database_name,
    database_settings_name,
    persistent_volume_name,
    service_name,
    volume_belongs_to,
)
from blacklist_operator.builders.status import READY, condition_changed, now
from blacklist_operator.model import BlacklistService, SpecError, check_host_path, parse
from blacklist_operator.runtime import Logger, Runtime


@dataclass
class Outcome:
    """What a reconcile did, for the handler's Events."""

    created: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    # (reason, message) of Warning Events: what a user must know even when it healed.
    warnings: list[tuple[str, str]] = field(default_factory=list)
    ready: bool = False
    first: bool = False


def _describe(manifest: Mapping[str, Any]) -> str:
    return f"{manifest['kind']} {manifest['metadata']['name']}"


def deployment_progress(deployment: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether a Deployment has all its replicas updated and available, and why not."""
    if deployment is None:
        return False, "is missing"
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration", 0)) < int(metadata.get("generation", 0)):
        return False, "is rolling out"
    available = int(status.get("availableReplicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    total = int(status.get("replicas", 0))
    if available >= wanted and updated >= wanted and total <= wanted:
        return True, f"has {available}/{wanted} replicas available"
    return False, f"has {available}/{wanted} replicas available"


def ready_condition(
    bls: BlacklistService,
    service: tuple[bool, str],
    database: tuple[bool, str],
    failures: list[str],
    current: Any,
) -> dict[str, Any]:
    """The Ready condition from the progress of the two Deployments and the apply failures."""
    if failures:
        reason, ok, message = "ApplyFailed", False, "; ".join(failures)
    else:
        service_ok, service_text = service
        database_ok, database_text = database
        ok = service_ok and database_ok
        message = f"Deployment {service_name(bls)} {service_text}; "
        message += f"Deployment {database_name(bls)} {database_text}"
        reason = (
            "AllReplicasAvailable"
            if ok
            else ("DatabaseUnavailable" if service_ok else "ServiceUnavailable")
        )
    condition = build_condition(READY, ok, reason, message, bls.generation, now())
    return merge_condition(current, condition)


def write_status(
    api: KubernetesApi,
    bls: BlacklistService,
    body: Mapping[str, Any],
    ready: dict[str, Any],
    node_port: int | None,
) -> None:
    """Apply our part of the status (Ready, observedGeneration, nodePort) if it changed."""
    status = body.get("status") or {}
    current = status.get("conditions")
    unchanged = (
        not condition_changed(current, ready)
        and status.get("observedGeneration") == bls.generation
        and status.get("nodePort") == node_port
    )
    if unchanged:
        return
    fields: dict[str, Any] = {"observedGeneration": bls.generation, "conditions": [ready]}
    if node_port is not None:
        fields["nodePort"] = node_port
    api.apply_status(bls.namespace, bls.name, fields, FIELD_MANAGER)


def report_invalid_spec(api: KubernetesApi, body: Mapping[str, Any], error: SpecError) -> None:
    """Ready=False with reason InvalidSpec, for a spec the schema let through."""
    metadata = body.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    current = (body.get("status") or {}).get("conditions")
    condition = merge_condition(
        current, build_condition(READY, False, "InvalidSpec", str(error), generation, now())
    )
    api.apply_status(
        metadata["namespace"],
        metadata["name"],
        {"observedGeneration": generation, "conditions": [condition]},
        FIELD_MANAGER,
    )


def ensure_secret(
    api: KubernetesApi, bls: BlacklistService, logger: Logger, outcome: Outcome
) -> dict[str, Any]:
    """Make sure Secret ``N-db`` exists and return it; an existing one is adopted as is.

    A missing Secret is generated. When the claim ``N-postgres`` already exists the
    volume may hold a ledger whose role has the lost password: the new one is
    applied by the database's init container when the new Secret's uid restarts it
    (see ``build_set_password_container``), and a Warning Event says so. Of a Secret
    we generated, only the owner reference is kept in line with ``retainOnDelete``.
    """
    name = database_settings_name(bls)
    existing = api.get("v1", "Secret", bls.namespace, name)
    if existing is None:
        claim = api.get("v1", "PersistentVolumeClaim", bls.namespace, database_name(bls))
        created = api.create(build_database_secret(bls, generate_password()))
        if created is not None:
            outcome.created.append(f"Secret {name}")
            if claim is None:
                logger.info(f"Created Secret {name} with a generated password")
            else:
                message = (
                    f"Secret {name} was missing while PersistentVolumeClaim {database_name(bls)} "
                    "exists: generated a new password; the database restarts and its init "
                    "container set-password gives it to the existing role (an image without "
                    "psql/pg_ctl cannot: restore the old Secret instead)"
                )
                logger.warning(message)
                outcome.warnings.append(("CredentialsRegenerated", message))
            return created
        # Someone (another reconcile of ours) created it in between: adopt theirs.
        existing = api.get("v1", "Secret", bls.namespace, name)
    if existing is None:
        raise ApiError(409, f"Secret {name} was deleted while it was being created")
    data = existing.get("data") or {}
    if "username" not in data or "password" not in data:
        raise ApiError(422, f"Secret {name} must hold the keys username and password")
    if managed_secret(existing):
        metadata = existing.get("metadata") or {}
        current = list(metadata.get("ownerReferences") or [])
        wanted = secret_owner_references(bls, current)
        if wanted != current:
            existing = api.merge_patch(
                "v1",
                "Secret",
                bls.namespace,
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


def static_volume_name(api: KubernetesApi, bls: BlacklistService) -> str | None:
    """The static PV of a hostPath resource: the one its claim is bound to, else the default.

    A claim's volumeName is immutable: one bound under an earlier naming keeps its volume.
    """
    if bls.spec.database.storage.host_path is None:
        return None
    claim = api.get("v1", "PersistentVolumeClaim", bls.namespace, database_name(bls))
    bound = ((claim or {}).get("spec") or {}).get("volumeName")
    return str(bound) if bound else persistent_volume_name(bls)


def check_volume_owner(api: KubernetesApi, bls: BlacklistService, name: str) -> None:
    """Refuse (ApiError 409) a PersistentVolume of that name that is not this resource's.

    PVs are cluster-scoped: a forced apply would take over another's volume and claim.
    """
    existing = api.get("v1", "PersistentVolume", None, name)
    if existing is not None and not volume_belongs_to(existing, bls):
        owner = ((existing.get("metadata") or {}).get("annotations") or {}).get(
            VOLUME_OWNER_ANNOTATION, "someone else"
        )
        raise ApiError(409, f"it exists and belongs to {owner}: left alone")


def reconcile(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> Outcome:
    """Apply every child of the BlacklistService ``body`` and write its Ready status.

    Raises :class:`SpecError` (after reporting it) for a spec that cannot be
    acted on, and :class:`ApiError` when the status itself cannot be written.
    """
    api = runtime.api
    try:
        bls = parse(body)
        check_host_path(bls, runtime.config.allowed_host_path_prefixes)
    except SpecError as error:
        report_invalid_spec(api, body, error)
        raise
    outcome = Outcome(first=(body.get("status") or {}).get("observedGeneration") is None)
    credentials: str | None = None
    try:
        secret = ensure_secret(api, bls, logger, outcome)
        credentials = (secret.get("metadata") or {}).get("uid")
    except ApiError as error:
        outcome.failures.append(f"Secret {database_settings_name(bls)}: {error}")
    try:
        volume_name = static_volume_name(api, bls)
    except ApiError as error:
        outcome.failures.append(f"PersistentVolumeClaim {database_name(bls)}: {error}")
        volume_name = None
    children = build_children(bls, runtime.config.operator_namespace, credentials, volume_name)
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for manifest in children:
        try:
            if manifest["kind"] == "PersistentVolume":
                check_volume_owner(api, bls, manifest["metadata"]["name"])
            applied = api.apply(manifest)
        except ApiError as error:
            outcome.failures.append(f"{_describe(manifest)}: {error}")
            continue
        live[child_key(manifest)] = applied.body
        if applied.created:
            outcome.created.append(_describe(manifest))
            logger.info(f"Created {_describe(manifest)}")
    service = live.get(("Service", service_name(bls)), {})
    ports = (service.get("spec") or {}).get("ports") or [{}]
    # The applied Deployments may already be older than what their watch delivered;
    # the refresh that follows this status write corrects Ready from the watch.
    ready = ready_condition(
        bls,
        deployment_progress(live.get(("Deployment", service_name(bls)))),
        deployment_progress(live.get(("Deployment", database_name(bls)))),
        outcome.failures,
        (body.get("status") or {}).get("conditions"),
    )
    outcome.ready = ready["status"] == "True"
    write_status(api, bls, body, ready, ports[0].get("nodePort"))
    return outcome


def _progress(runtime: Runtime, namespace: str, deployment: str) -> tuple[bool, str]:
    """A Deployment's progress as its watch last reported it, else as read now."""
    known = runtime.deployments.get((namespace, deployment))
    if known is None:
        read = deployment_progress(runtime.api.get("apps/v1", "Deployment", namespace, deployment))
        # Only the watch overwrites: what it delivered meanwhile is newer than this read.
        known = runtime.deployments.setdefault((namespace, deployment), read)
    return known


def refresh_status(runtime: Runtime, body: Mapping[str, Any]) -> bool:
    """Update Ready from the Deployments' watched progress (no reads); True when ready.

    ``status.nodePort`` is kept as the last reconcile wrote it: it is ours under
    server-side apply, so it must be sent again or it would be removed.
    """
    try:
        bls = parse(body)
        check_host_path(bls, runtime.config.allowed_host_path_prefixes)
    except SpecError:
        return False  # Ready=False InvalidSpec stays as the reconcile reported it.
    status = body.get("status") or {}
    if status.get("observedGeneration") != bls.generation:
        # The reconcile of this generation has not written its status yet; it will.
        return False
    ready = ready_condition(
        bls,
        _progress(runtime, bls.namespace, service_name(bls)),
        _progress(runtime, bls.namespace, database_name(bls)),
        [],
        status.get("conditions"),
    )
    write_status(runtime.api, bls, body, ready, status.get("nodePort"))
    return bool(ready["status"] == "True")


def release_storage(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> None:
    """On deletion: delete our static PersistentVolume unless the data is to be retained."""
    try:
        bls = parse(body)
    except SpecError:
        return
    storage = bls.spec.database.storage
    if storage.host_path is None or storage.retain_on_delete:
        return
    name = static_volume_name(runtime.api, bls)
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
    if not volume_belongs_to(volume, bls):
        logger.warning(f"PersistentVolume {name} is not this resource's: left alone")
        return
    if runtime.api.delete("v1", "PersistentVolume", None, name):
        logger.info(f"Released PersistentVolume {name}")
