"""The watchers: kopf event handlers that keep the shared view of the instances and feed the queues.

* every BlacklistService event updates ``Runtime.instances`` (the latest body)
  and wakes the ban sync when the spec changed, or a status refresh when a
  status came back not Ready;
* a Deployment event updates ``Runtime.deployments`` (its availability) and,
  when that changed, queues a status refresh (a full reconcile when
  availability was lost); the database Deployment becoming available tells the
  ban sync to connect;
* any other child event is checked against the manifest rebuilt from the
  instance's latest body: a deleted or edited child queues a full reconcile, an
  edited or deleted ban-list ConfigMap a rewrite.

Importing this module registers the handlers with kopf (``handlers`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from blacklist_contract.wire import head_name
from blacklist_operator import GROUP, PLURAL, VERSION
from blacklist_operator.builders import build_children, child_key, contains
from blacklist_operator.builders.children import optional_children
from blacklist_operator.builders.naming import (
    COMPONENT_BANLIST,
    COMPONENT_DATABASE,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
)
from blacklist_operator.builders.status import READY, find_condition
from blacklist_operator.controller.memo import OperatorMemo
from blacklist_operator.model.resource import SpecError, parse, with_images
from blacklist_operator.reconcile.readiness import deployment_progress
from blacklist_operator.runtime.state import DeploymentProgress, Runtime
from blacklist_operator.runtime.workqueue import InstanceKey, Reason

MANAGED = {MANAGED_BY_LABEL: "blacklist-operator"}
# (group/version, plural) of the namespaced children whose changes we follow.
# Not Secrets: a watch needs list/watch on every Secret of every watched namespace
# (RBAC cannot narrow either to a label), and the operator reads exactly one Secret
# per instance, by name. A deleted Secret N-db is recreated by the next full
# reconcile: at once when a Deployment loses availability (a pod that restarted
# without its Secret), otherwise within the resync period.
WATCHED_CHILDREN = (
    ("apps/v1", "deployments"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("v1", "persistentvolumeclaims"),
    ("v1", "serviceaccounts"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("networking.k8s.io/v1", "networkpolicies"),
    ("networking.k8s.io/v1", "ingresses"),
    ("policy/v1", "poddisruptionbudgets"),
    ("autoscaling/v2", "horizontalpodautoscalers"),
    ("batch/v1", "cronjobs"),
)


def _instance_changed(runtime: Runtime, event_type: str | None, raw: Mapping[str, Any]) -> None:
    metadata = raw.get("metadata") or {}
    key: InstanceKey = (str(metadata.get("namespace")), str(metadata.get("name")))
    if event_type == "DELETED":
        runtime.instances.remove(key)
        runtime.children.discard(key)
        runtime.banlists.wake(key, Reason.REMOVED)
        runtime.forget_deployments(key)
        _wake_next_roll(runtime)
        return
    previous = runtime.instances.get(key)
    runtime.instances.update(raw)
    generation = metadata.get("generation")
    if previous is None or (previous.get("metadata") or {}).get("generation") != generation:
        runtime.banlists.wake(key, Reason.SPEC)
    status = raw.get("status") or {}
    ready = find_condition(status.get("conditions"), READY) or {}
    if status.get("observedGeneration") == generation and ready.get("status") != "True":
        # The reconcile wrote Ready from what it applied; the watch may know better by now.
        runtime.children.wake(key, Reason.STATUS)


@kopf.on.event(GROUP, VERSION, PLURAL, id="track-instances")
async def track_instances(event: kopf.RawEvent, memo: OperatorMemo, **_: Any) -> None:
    """Keep the shared view of every BlacklistService that the workers act on."""
    runtime = memo.runtime
    runtime.handler_context.capture()
    raw = event.get("object")
    if isinstance(raw, dict):
        _instance_changed(runtime, event.get("type"), raw)


def _wake_next_roll(runtime: Runtime) -> None:
    """Reconcile the first resource waiting to roll onto the default images: its turn may be now."""
    waiting = runtime.rollout.next_waiting()
    if waiting is not None:
        runtime.children.wake(waiting, Reason.RESYNC)


def _deployment_changed(
    runtime: Runtime, key: InstanceKey, event_type: str | None, body: kopf.Body
) -> None:
    metadata = body.get("metadata") or {}
    where = (key[0], str(metadata.get("name")))
    progress = (
        DeploymentProgress(False, "is missing")
        if event_type == "DELETED"
        else deployment_progress(body)
    )
    previous = runtime.deployments.get(where)
    runtime.deployments[where] = progress
    if progress == previous:
        return
    # Availability lost may mean a child that is not watched (Secret N-db) is gone:
    # a full reconcile checks every child; otherwise Ready is only recomputed.
    lost = previous is not None and previous.available and not progress.available
    runtime.children.wake(key, Reason.DRIFT if lost else Reason.STATUS)
    if progress.available and not (previous and previous.available):
        # A roll may have ended.
        _wake_next_roll(runtime)
    component = (metadata.get("labels") or {}).get(COMPONENT_LABEL)
    if (
        component == COMPONENT_DATABASE
        and progress.available
        and not (previous and previous.available)
    ):
        runtime.banlists.wake(key, Reason.DATABASE)


def _drifted(runtime: Runtime, key: InstanceKey, event_type: str | None, body: kopf.Body) -> bool:
    """Whether a child event shows a deleted or edited child of a settled instance."""
    instance = runtime.instances.get(key)
    if instance is None or (instance.get("metadata") or {}).get("deletionTimestamp"):
        return False
    generation = (instance.get("metadata") or {}).get("generation")
    if (instance.get("status") or {}).get("observedGeneration") != generation:
        return False  # The reconcile of this generation is under way; it applies everything.
    try:
        resource = parse(instance, runtime.config.images)
        held = runtime.rollout.held(key)
        if held is not None:
            # Waiting for its turn to roll: its Deployments keep their images.
            resource = with_images(resource, held.service, held.database)
        children = build_children(
            resource,
            runtime.config.operator_namespace,
            external=runtime.external_databases.get(key),
            host_path_init_image=runtime.config.host_path_init_image,
        )
    except SpecError:
        return event_type == "DELETED"
    wanted = (str(body.get("kind")), str((body.get("metadata") or {}).get("name")))
    desired = next((child for child in children if child_key(child) == wanted), None)
    if event_type == "DELETED":
        # An optional child the spec no longer asks for was deleted by the reconcile itself.
        return desired is not None or wanted not in optional_children(resource)
    return desired is not None and not contains(body, desired)


def _child_changed(runtime: Runtime, event_type: str | None, body: kopf.Body) -> None:
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    instance = labels.get(INSTANCE_LABEL)
    if instance is None:
        return  # Not ours.
    key = (str(metadata.get("namespace")), str(instance))
    name = str(metadata.get("name"))
    if labels.get(COMPONENT_LABEL) == COMPONENT_BANLIST:
        if event_type == "DELETED":
            # The head is always there; a part the sync deleted itself it no longer remembers.
            drifted = name == head_name(key[1]) or runtime.written_banlist.differs(
                key[0], name, None
            )
        else:
            drifted = runtime.written_banlist.differs(key[0], name, body)
        if drifted:
            runtime.banlists.wake(key, Reason.DRIFT)
        return
    if event_type != "DELETED":
        # It exists (a foreign edit may even have made it ours): read it at the next reconcile.
        runtime.absent_children.forget(key[0], str(body.get("kind")), name)
    else:
        # Gone, or no longer labelled ours: an object in its place may be someone else's.
        runtime.owned_children.forget(key[0], str(body.get("kind")), name)
    if body.get("kind") == "Deployment":
        _deployment_changed(runtime, key, event_type, body)
    # The initial listing (no event type) is checked too: after a watch is re-listed
    # it is the only news of a change made while the watch was down.
    if _drifted(runtime, key, event_type, body):
        runtime.children.wake(key, Reason.DRIFT)


def _watch(group_version: str, plural: str) -> None:
    group, _, version = group_version.rpartition("/")

    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"follow-{plural}")
    async def child_event(
        event: kopf.RawEvent, body: kopf.Body, memo: OperatorMemo, **_: Any
    ) -> None:
        _child_changed(memo.runtime, event.get("type"), body)


for _group_version, _plural in WATCHED_CHILDREN:
    _watch(_group_version, _plural)
