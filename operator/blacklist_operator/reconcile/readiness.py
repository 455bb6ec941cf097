"""Ready: computed from the progress of the two Deployments and written to the status.

The reconcile computes it from what it applied; :func:`refresh_status` recomputes
it from the Deployments' watched progress, with no reads, when only that changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blacklist_operator import FIELD_MANAGER, metrics
from blacklist_operator.builders import build_condition, merge_condition
from blacklist_operator.builders.naming import database_name, service_name
from blacklist_operator.builders.status import (
    READY,
    build_observed_status,
    condition_changed,
    find_condition,
    now,
    status_changed,
)
from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.model.resource import BlacklistService, SpecError, check_host_path, parse
from blacklist_operator.runtime.state import DeploymentProgress, Runtime

# Ready's reason while the Secret of spec.database.external is missing or incomplete.
SECRET_INVALID = "DatabaseSecretInvalid"  # noqa: S105
# Ready's reason while an object we did not create holds the name of one of our children.
CHILD_CONFLICT = "ChildConflict"
# Ready's reason while the API refuses a child; the reconcile retries it by itself.
APPLY_FAILED = "ApplyFailed"


def deployment_progress(deployment: Mapping[str, Any] | None) -> DeploymentProgress:
    """Whether a Deployment has all its replicas updated and available, why not, and its counts."""
    if deployment is None:
        return DeploymentProgress(False, "is missing")
    metadata = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    wanted = int(spec.get("replicas", 1))
    total = int(status.get("replicas", 0))
    updated = int(status.get("updatedReplicas", 0))
    image = template_image(deployment)
    counts = (total, int(status.get("readyReplicas", 0)), wanted, image)
    if int(status.get("observedGeneration", 0)) < int(metadata.get("generation", 0)):
        return DeploymentProgress(False, "is rolling out", *counts, rolling_out=True)
    available = int(status.get("availableReplicas", 0))
    ok = available >= wanted and updated >= wanted and total <= wanted
    return DeploymentProgress(
        ok,
        f"has {available}/{wanted} replicas available",
        *counts,
        rolling_out=updated < wanted or total > updated,
    )


def template_image(deployment: Mapping[str, Any]) -> str | None:
    """The image of a Deployment's first container: the service's, or PostgreSQL's."""
    template = (deployment.get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or [{}]
    image = containers[0].get("image")
    return None if image is None else str(image)


def database_progress(
    resource: BlacklistService, deployment: Mapping[str, Any] | None
) -> DeploymentProgress:
    """:func:`deployment_progress` of ``N-postgres``; an external database has none to wait for.

    Whether the external database answers is the ban sync's DatabaseReady condition,
    kept apart from Ready as for the bundled one.
    """
    external = resource.spec.database.external
    if external is not None:
        return DeploymentProgress(
            True, f"uses the external database of Secret {external.secret_name}"
        )
    return deployment_progress(deployment)


def ready_condition(
    resource: BlacklistService,
    service: DeploymentProgress,
    database: DeploymentProgress,
    failures: list[str],
    current: Any,
    database_secret_problem: str | None = None,
    database_secret_reason: str = SECRET_INVALID,
    conflicts: list[str] | None = None,
) -> dict[str, Any]:
    """The Ready condition from the progress of the two Deployments and the apply failures.

    ``database_secret_problem`` says why the Secret of an external database cannot be
    used: Ready=False with reason ``database_secret_reason`` (DatabaseSecretInvalid, or
    DatabaseHostNotAllowed), retried by the reconcile. ``conflicts`` name the children left
    alone because an object of their name is someone else's: Ready=False ChildConflict.
    """
    if database_secret_problem is not None:
        reason, ok, message = database_secret_reason, False, database_secret_problem
    elif conflicts:
        reason, ok, message = CHILD_CONFLICT, False, "; ".join(conflicts)
    elif failures:
        reason, ok, message = APPLY_FAILED, False, "; ".join(failures)
    else:
        service_ok, service_text = service.available, service.detail
        database_ok, database_text = database.available, database.detail
        ok = service_ok and database_ok
        message = f"Deployment {service_name(resource)} {service_text}; "
        if resource.spec.database.external is None:
            message += f"Deployment {database_name(resource)} {database_text}"
        else:
            message += f"the service {database_text}"
        reason = (
            "AllReplicasAvailable"
            if ok
            else ("DatabaseUnavailable" if service_ok else "ServiceUnavailable")
        )
    condition = build_condition(READY, ok, reason, message, resource.generation, now())
    return merge_condition(current, condition)


def write_status(
    api: KubernetesApi,
    resource: BlacklistService,
    body: Mapping[str, Any],
    ready: dict[str, Any],
    node_port: int | None,
    service: DeploymentProgress,
    image: str | None,
) -> None:
    """Apply our part of the status if it changed (:func:`build_observed_status`).

    ``service`` is the service Deployment's progress, whose counts become
    ``status.replicas`` and ``status.readyReplicas`` (and the gauges of
    :func:`metrics.service_replicas`); ``image`` is the service image its pods run.
    """
    wanted = resource.spec.replicas if service.wanted is None else service.wanted
    metrics.service_replicas((resource.namespace, resource.name), wanted, service.ready_replicas)
    status = body.get("status") or {}
    fields = build_observed_status(
        resource, ready, node_port, service.replicas, service.ready_replicas
    )
    if image is not None:
        fields["image"] = image
    if not condition_changed(status.get("conditions"), ready) and not status_changed(
        status, fields
    ):
        return
    api.apply_status(resource.namespace, resource.name, fields, FIELD_MANAGER)


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


def watched_progress(runtime: Runtime, namespace: str, deployment: str) -> DeploymentProgress:
    """A Deployment's progress as its watch last reported it, else as read now."""
    known = runtime.deployments.get((namespace, deployment))
    if known is None:
        read = deployment_progress(runtime.api.get("apps/v1", "Deployment", namespace, deployment))
        # Only the watch overwrites: what it delivered meanwhile is newer than this read.
        known = runtime.deployments.setdefault((namespace, deployment), read)
    return known


def refresh_status(runtime: Runtime, body: Mapping[str, Any]) -> bool:
    """Update Ready and the replica counts from the Deployments' watched progress (no reads).

    True when ready. ``status.nodePort`` and ``status.image`` are kept as the last
    reconcile wrote them: they are ours under server-side apply, so they must be sent
    again or they would be removed.
    """
    try:
        resource = parse(body, runtime.config.images)
        check_host_path(resource, runtime.config.allowed_host_path_prefixes)
    except SpecError:
        return False  # Ready=False InvalidSpec stays as the reconcile reported it.
    status = body.get("status") or {}
    if status.get("observedGeneration") != resource.generation:
        # The reconcile of this generation has not written its status yet; it will.
        return False
    if (find_condition(status.get("conditions"), READY) or {}).get("reason") in (
        CHILD_CONFLICT,
        APPLY_FAILED,
    ):
        # Only a reconcile, which looks at the children again, may clear ChildConflict or
        # ApplyFailed (it is retried by itself): the Deployments' progress says nothing of a
        # child the API refused, and must not report Ready over it.
        return False
    external = resource.spec.database.external is not None
    if external and (resource.namespace, resource.name) not in runtime.external_databases:
        # The last reconcile found the Secret unusable (or has not read it yet): only a
        # reconcile, which reads it again, may clear DatabaseSecretInvalid.
        return False
    service = watched_progress(runtime, resource.namespace, service_name(resource))
    ready = ready_condition(
        resource,
        service,
        database_progress(resource, None)
        if external
        else watched_progress(runtime, resource.namespace, database_name(resource)),
        [],
        status.get("conditions"),
    )
    write_status(
        runtime.api, resource, body, ready, status.get("nodePort"), service, status.get("image")
    )
    return bool(ready["status"] == "True")
