"""The one reconcile path: parse the spec, build every child, apply it, report status.

Create, update, resume, the resync timer and the drift watchers all end here.
It is level-based: it never looks at what changed, only at what should be, so
running it twice, or after a crash at any point, converges to the same state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from blacklist_operator import FIELD_MANAGER, metrics
from blacklist_operator.builders import (
    absent_children,
    build_children,
    child_key,
)
from blacklist_operator.builders.availability import applies_replicas, build_replicas_hand_over
from blacklist_operator.builders.children import CUSTOM_KINDS
from blacklist_operator.builders.naming import database_name, service_name
from blacklist_operator.builders.ownership import created_by, owned_by
from blacklist_operator.kube.api import ApiError, KubernetesApi
from blacklist_operator.model.resource import (
    BlacklistService,
    SpecError,
    check_host_path,
    host_path_directory,
    parse,
    place_host_path,
)
from blacklist_operator.reconcile.database_access import database_credentials
from blacklist_operator.reconcile.outcome import Outcome, describe, namespace_terminating
from blacklist_operator.reconcile.readiness import (
    database_progress,
    deployment_progress,
    ready_condition,
    report_invalid_spec,
    write_status,
)
from blacklist_operator.reconcile.rollout_gate import gate_default_images
from blacklist_operator.reconcile.volumes import (
    check_volume_owner,
    kept_volume_path,
    static_volume_name,
)
from blacklist_operator.runtime.state import Logger, Runtime

# A reconcile that found the external database's Secret unusable runs again this soon:
# the Secret is read by name, not watched.
SECRET_RETRY_SECONDS = 10.0
# A reconcile that left a child alone because an object of its name is someone else's runs
# again this soon: that object carries none of our labels, so no watch tells of its removal.
CONFLICT_RETRY_SECONDS = 30.0
# A resource next in line to roll onto the operator's default images looks again this soon
# (the end of a roll also wakes it at once).
ROLLOUT_RETRY_SECONDS = 10.0
# The second owner of Deployment N's spec.replicas while an autoscaler is set.
REPLICAS_MANAGER = f"{FIELD_MANAGER}-replicas"


def legacy_host_path_message(path: str) -> str:
    """Why a PV made before the operator chose directories deserves the admin's look."""
    return (
        f"the database volume is still on {path}, the directory this resource named before "
        "the operator chose one per resource (a PV's path cannot change); a directory that "
        "is the allowed prefix or holds other resources' data exposes them: move the data "
        "to the resource's own directory and recreate the volume"
    )


def hand_over_replicas(api: KubernetesApi, resource: BlacklistService, logger: Logger) -> None:
    """With ``spec.autoscaling``, keep Deployment N's ``spec.replicas`` when we stop applying it.

    See :func:`~blacklist_operator.builders.availability.build_replicas_hand_over`:
    applied under :data:`REPLICAS_MANAGER` at its current value, the field outlives
    our ownership; the autoscaler's next write through the scale subresource takes it.
    """
    if resource.spec.autoscaling is None:
        return
    name = service_name(resource)
    live = api.get("apps/v1", "Deployment", resource.namespace, name)
    if live is None or not applies_replicas(live, FIELD_MANAGER):
        return
    replicas = int((live.get("spec") or {}).get("replicas", 1))
    api.apply(build_replicas_hand_over(resource, replicas), REPLICAS_MANAGER)
    logger.info(f"Handed spec.replicas ({replicas}) of Deployment {name} over to the autoscaler")


def served_children(
    api: KubernetesApi, children: list[dict[str, Any]], logger: Logger, outcome: Outcome
) -> list[dict[str, Any]]:
    """``children`` without those whose CRD the API does not serve, each with a Warning.

    A ServiceMonitor asked for in a cluster without the Prometheus Operator's CRD is
    not an error of the service: Ready still says how the service is, and a Warning
    Event ``ServiceMonitorUnavailable`` (at every full reconcile) says what is missing.
    """
    served = []
    for manifest in children:
        kind = manifest["kind"]
        if kind in CUSTOM_KINDS:
            try:
                available = api.serves(manifest["apiVersion"], kind)
            except ApiError as error:
                outcome.failures.append(f"{describe(manifest)}: API discovery: {error}")
                continue
            if not available:
                message = (
                    f"{describe(manifest)} was not created: the API does not serve "
                    f"{manifest['apiVersion']} {kind} (install the Prometheus Operator's "
                    "CRDs; it is created at the next reconcile after they appear)"
                )
                logger.warning(message)
                outcome.warnings.append((f"{kind}Unavailable", message))
                continue
        served.append(manifest)
    return served


def delete_absent_children(
    runtime: Runtime, resource: BlacklistService, logger: Logger, outcome: Outcome
) -> None:
    """Delete the optional children (Ingress, budget, autoscaler, ServiceMonitor) not asked for.

    Only ours: an object of that name that this resource does not own is left alone.
    A kind whose CRD the API does not serve has no object to delete. One already known
    to be absent (``Runtime.absent_children``) is not read again.
    """
    api, absent = runtime.api, runtime.absent_children
    for api_version, kind, name in absent_children(resource):
        if absent.known(resource.namespace, kind, name):
            continue
        try:
            if kind in CUSTOM_KINDS and not api.serves(api_version, kind):
                continue
            existing = api.get(api_version, kind, resource.namespace, name)
            if existing is None:
                absent.mark(resource.namespace, kind, name)
                continue
            if not owned_by(existing, resource):
                continue
            deleted = api.delete(api_version, kind, resource.namespace, name)
            absent.mark(resource.namespace, kind, name)
            if deleted:
                logger.info(f"Deleted {kind} {name}")
        except ApiError as error:
            outcome.failures.append(f"{kind} {name}: {error}")


def running_image(deployment: Mapping[str, Any] | None) -> str | None:
    """The service container's image in Deployment ``N`` as applied, or None without it."""
    template = ((deployment or {}).get("spec") or {}).get("template") or {}
    for container in (template.get("spec") or {}).get("containers") or []:
        if container.get("name") == "service":
            return str(container.get("image"))
    return None


def foreign_child(
    runtime: Runtime, resource: BlacklistService, manifest: Mapping[str, Any]
) -> bool:
    """Whether an object of ``manifest``'s name exists that this resource did not create.

    A forced server-side apply would take such an object over (and the garbage collector
    would delete it with the resource): it is left untouched instead.
    """
    kind, name = child_key(dict(manifest))
    if runtime.owned_children.known(resource.namespace, kind, name, resource.uid):
        return False
    existing = runtime.api.get(manifest["apiVersion"], kind, resource.namespace, name)
    return existing is not None and not created_by(existing, resource)


def reconcile(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> Outcome:
    """Apply every child of the BlacklistService ``body`` and write its Ready status.

    Raises :class:`SpecError` (after reporting it) for a spec that cannot be
    acted on, and :class:`ApiError` when the status itself cannot be written.
    Each call is counted by outcome and timed (:mod:`blacklist_operator.metrics`).
    """
    started = time.monotonic()
    outcome = metrics.OUTCOME_FAILED
    try:
        done = _reconcile(runtime, body, logger)
    except SpecError:
        outcome = metrics.OUTCOME_INVALID_SPEC
        raise
    else:
        if not done.failures:
            outcome = metrics.OUTCOME_OK
        return done
    finally:
        metrics.reconciled(outcome, time.monotonic() - started)


def _reconcile(runtime: Runtime, body: Mapping[str, Any], logger: Logger) -> Outcome:
    api = runtime.api
    try:
        resource = parse(body, runtime.config.images)
        check_host_path(resource, runtime.config.allowed_host_path_prefixes)
    except SpecError as error:
        report_invalid_spec(api, body, error)
        raise
    outcome = Outcome(first=(body.get("status") or {}).get("observedGeneration") is None)
    credentials, external = database_credentials(
        api, resource, logger, outcome, runtime.config.allowed_external_database_hosts
    )
    runtime.remember_external(resource.namespace, resource.name, external)
    if outcome.namespace_terminating:
        return outcome
    volume_name = None
    if resource.spec.database.external is None:
        try:
            volume_name = static_volume_name(api, resource)
            # Where on the node: PREFIX/NS/N, chosen here, never the tenant's path itself.
            prefixes = runtime.config.allowed_host_path_prefixes
            kept = kept_volume_path(api, resource, volume_name)
            if kept is not None and kept != host_path_directory(resource, prefixes):
                outcome.warnings.append(("LegacyHostPath", legacy_host_path_message(kept)))
            resource = place_host_path(resource, prefixes, kept)
        except ApiError as error:
            outcome.failures.append(f"PersistentVolumeClaim {database_name(resource)}: {error}")
    gate = gate_default_images(runtime, body, resource)
    resource = gate.resource
    if gate.notice is not None:
        outcome.notices.append(gate.notice)
        logger.info(gate.notice[1])
    outcome.rollout_retry = gate.retry
    try:
        hand_over_replicas(api, resource, logger)
    except ApiError as error:
        outcome.failures.append(f"Deployment {service_name(resource)} replicas: {error}")
    children = served_children(
        api,
        build_children(
            resource,
            runtime.config.operator_namespace,
            credentials,
            volume_name,
            external,
            runtime.config.host_path_init_image,
        ),
        logger,
        outcome,
    )
    live: dict[tuple[str, str], dict[str, Any]] = {}
    for manifest in children:
        try:
            if manifest["kind"] == "PersistentVolume":
                check_volume_owner(api, resource, manifest["metadata"]["name"])
            elif foreign_child(runtime, resource, manifest):
                message = (
                    f"{describe(manifest)} exists and was not created by this BlacklistService: "
                    "left untouched (delete or rename it, or rename the BlacklistService)"
                )
                outcome.conflicts.append(message)
                logger.warning(message)
                outcome.warnings.append(("ChildConflict", message))
                continue
            applied = api.apply(manifest)
            runtime.absent_children.forget(resource.namespace, *child_key(manifest))
            if manifest["kind"] not in CUSTOM_KINDS:
                # Watched kinds only: their watch forgets a child that goes away.
                runtime.owned_children.mark(resource.namespace, *child_key(manifest), resource.uid)
        except ApiError as error:
            if namespace_terminating(error):
                # Its children are going with it; recreating them one by one (and posting
                # an Event, which is refused too) would only load the API server.
                outcome.namespace_terminating = True
                return outcome
            outcome.failures.append(f"{describe(manifest)}: {error}")
            continue
        live[child_key(manifest)] = applied.body
        if applied.created:
            outcome.created.append(describe(manifest))
            logger.info(f"Created {describe(manifest)}")
    delete_absent_children(runtime, resource, logger, outcome)
    service = live.get(("Service", service_name(resource)), {})
    ports = (service.get("spec") or {}).get("ports") or [{}]
    # The applied Deployments may already be older than what their watch delivered;
    # the refresh that follows this status write corrects Ready from the watch.
    service_deployment = live.get(("Deployment", service_name(resource)))
    progress = deployment_progress(service_deployment)
    ready = ready_condition(
        resource,
        progress,
        database_progress(resource, live.get(("Deployment", database_name(resource)))),
        outcome.failures,
        (body.get("status") or {}).get("conditions"),
        outcome.database_secret_problem,
        outcome.database_secret_reason,
        outcome.conflicts,
    )
    outcome.ready = ready["status"] == "True"
    image = running_image(service_deployment) or (body.get("status") or {}).get("image")
    write_status(api, resource, body, ready, ports[0].get("nodePort"), progress, image)
    key = (resource.namespace, resource.name)
    retry = runtime.retry_delay(key, bool(outcome.failures))
    if retry is not None:
        runtime.reconcile_later(key, retry)
    elif outcome.database_secret_problem is not None:
        runtime.reconcile_later(key, SECRET_RETRY_SECONDS)
    elif outcome.conflicts:
        runtime.reconcile_later(key, CONFLICT_RETRY_SECONDS)
    elif outcome.rollout_retry:
        runtime.reconcile_later(key, ROLLOUT_RETRY_SECONDS)
    return outcome
