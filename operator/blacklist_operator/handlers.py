"""The kopf handlers: thin entry points that hand over to the reconcile and the shared workers.

* create / update / resume → :func:`reconcile.reconcile`;
* every BlacklistService event updates the shared view of the instances; the
  shared workers (``workers``, ``banlist.daemon``) follow children, resync
  periodically and sync the ban lists of all instances, with no task per instance;
* the watchers of the children wake those workers: a deleted or edited child →
  full reconcile, a Deployment whose availability changed → status refresh, a
  database Deployment that became available → the ban sync connects;
* the deletion handler (behind our finalizer, which only a resource with a
  hostPath volume to release carries) releases the static PV.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from blacklist_operator import GROUP, PLURAL, VERSION
from blacklist_operator.apply import ApiError, KubernetesApi, load_client
from blacklist_operator.banlist.daemon import BanSyncSupervisor
from blacklist_operator.builders import build_children, child_key, contains
from blacklist_operator.builders.naming import (
    COMPONENT_BANLIST,
    COMPONENT_DATABASE,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
)
from blacklist_operator.builders.status import READY, find_condition
from blacklist_operator.config import AddressMap, OperatorConfig
from blacklist_operator.model import SpecError, parse
from blacklist_operator.reconcile import deployment_progress, reconcile, release_storage
from blacklist_operator.runtime import Runtime, runtime_of
from blacklist_operator.workers import follow_children, post_events, resync
from blacklist_operator.workqueue import InstanceKey, Reason

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
)
# Status refreshes and drift reconciles of all instances run on this many tasks.
FOLLOW_WORKERS = 4


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """Own every kopf setting in one place, each with its reason; start the shared workers."""
    # Our finalizer and bookkeeping annotations live under our own API group.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are ours (kopf.info/warn with CamelCase reasons): kopf's Event per log
    # line would drown them, so log lines are not posted, and Normal Events are kept.
    settings.posting.loggers = False
    settings.posting.level = logging.INFO
    # Ask the API server to end watches every 5 minutes, so a silently dead
    # connection is noticed and the watch re-listed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    # Children are watched only when they carry our managed-by label (server-side filter),
    # so the operator neither receives nor keeps every Secret and ConfigMap of the cluster.
    for group_version, plural in WATCHED_CHILDREN:
        settings.watching.label_selectors[group_version, plural] = (
            f"{MANAGED_BY_LABEL}=blacklist-operator"
        )
    config = memo.get("config")
    if not isinstance(config, OperatorConfig):
        config = OperatorConfig()
    # Reconciles block on API calls; kopf's handlers and our workers share one pool
    # of that many threads (and one pool of API connections) instead of one each.
    executor = ThreadPoolExecutor(config.workers, thread_name_prefix="reconcile")
    settings.execution.executor = executor
    runtime = Runtime(
        config=config,
        api=KubernetesApi(load_client(pool_size=config.workers + 4)),
        addresses=AddressMap(config.database_address_map),
        executor=executor,
    )
    supervisor = BanSyncSupervisor(runtime, logger)
    loop = asyncio.get_running_loop()
    runtime.tasks = [
        *(loop.create_task(follow_children(runtime, logger)) for _ in range(FOLLOW_WORKERS)),
        loop.create_task(resync(runtime)),
        *supervisor.tasks(),
    ]
    memo["runtime"] = runtime
    memo["supervisor"] = supervisor


@kopf.on.cleanup()
async def stop_workers(memo: Any, **_: Any) -> None:
    """Cancel the shared workers and close every database connection."""
    runtime = runtime_of(memo)
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    supervisor = memo.get("supervisor")
    if isinstance(supervisor, BanSyncSupervisor):
        supervisor.shutdown()


def _reconcile(body: kopf.Body, memo: Any, logger: kopf.Logger) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    try:
        outcome = reconcile(runtime_of(memo), body, logger)
    except SpecError as error:
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        raise kopf.PermanentError(str(error)) from error
    except ApiError as error:
        raise kopf.TemporaryError(f"the API refused: {error}", delay=5) from error
    post_events(body, outcome)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_blacklist_service(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Bring every child of the BlacklistService to its spec."""
    _reconcile(body, memo, logger)


def _holds_a_static_volume(spec: kopf.Spec, **_: Any) -> bool:
    """Whether deleting the resource must release a hostPath PersistentVolume.

    Only such a resource carries our finalizer: the garbage collector removes every
    other child, and a finalizer nobody needs would hold the resource (and its
    namespace) for good once the operator is gone, as ``helm uninstall`` of a
    release that holds both the operator and a BlacklistService does.
    """
    storage = (spec.get("database") or {}).get("storage") or {}
    return bool(storage.get("hostPath")) and not storage.get("retainOnDelete", False)


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_holds_a_static_volume)
def delete_blacklist_service(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Release the static PersistentVolume; the garbage collector removes the rest."""
    try:
        release_storage(runtime_of(memo), body, logger)
    except ApiError as error:
        raise kopf.TemporaryError(f"could not release the volume: {error}", delay=5) from error


def _instance_changed(runtime: Runtime, event_type: str | None, raw: Mapping[str, Any]) -> None:
    metadata = raw.get("metadata") or {}
    key: InstanceKey = (str(metadata.get("namespace")), str(metadata.get("name")))
    if event_type == "DELETED":
        runtime.instances.remove(key)
        runtime.children.discard(key)
        runtime.banlists.wake(key, Reason.REMOVED)
        runtime.forget_deployments(key)
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
async def track_instances(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
    """Keep the shared view of every BlacklistService that the workers act on."""
    runtime = runtime_of(memo)
    if runtime.handler_context is None:
        runtime.handler_context = contextvars.copy_context()
    raw = event.get("object")
    if isinstance(raw, dict):
        _instance_changed(runtime, event.get("type"), raw)


def _deployment_changed(
    runtime: Runtime, key: InstanceKey, event_type: str | None, body: kopf.Body
) -> None:
    metadata = body.get("metadata") or {}
    where = (key[0], str(metadata.get("name")))
    progress = (False, "is missing") if event_type == "DELETED" else deployment_progress(body)
    previous = runtime.deployments.get(where)
    runtime.deployments[where] = progress
    if progress == previous:
        return
    # Availability lost may mean a child that is not watched (Secret N-db) is gone:
    # a full reconcile checks every child; otherwise Ready is only recomputed.
    lost = previous is not None and previous[0] and not progress[0]
    runtime.children.wake(key, Reason.DRIFT if lost else Reason.STATUS)
    component = (metadata.get("labels") or {}).get(COMPONENT_LABEL)
    if component == COMPONENT_DATABASE and progress[0] and not (previous and previous[0]):
        runtime.banlists.wake(key, Reason.DATABASE)


def _drifted(runtime: Runtime, key: InstanceKey, event_type: str | None, body: kopf.Body) -> bool:
    """Whether a child event shows a deleted or edited child of a settled instance."""
    instance = runtime.instances.get(key)
    if instance is None or (instance.get("metadata") or {}).get("deletionTimestamp"):
        return False
    generation = (instance.get("metadata") or {}).get("generation")
    if (instance.get("status") or {}).get("observedGeneration") != generation:
        return False  # The reconcile of this generation is under way; it applies everything.
    if event_type == "DELETED":
        return True
    try:
        children = build_children(parse(instance), runtime.config.operator_namespace)
    except SpecError:
        return False
    wanted = (str(body.get("kind")), str((body.get("metadata") or {}).get("name")))
    desired = next((child for child in children if child_key(child) == wanted), None)
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
        text = (body.get("data") or {}).get("addresses")
        if event_type == "DELETED" or runtime.written_shards.differs(key[0], name, text):
            runtime.banlists.wake(key, Reason.DRIFT)
        return
    if body.get("kind") == "Deployment":
        _deployment_changed(runtime, key, event_type, body)
    # The initial listing (no event type) is checked too: after a watch is re-listed
    # it is the only news of a change made while the watch was down.
    if _drifted(runtime, key, event_type, body):
        runtime.children.wake(key, Reason.DRIFT)


def _watch(group_version: str, plural: str) -> None:
    group, _, version = group_version.rpartition("/")

    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"follow-{plural}")
    async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
        _child_changed(runtime_of(memo), event.get("type"), body)


for _group_version, _plural in WATCHED_CHILDREN:
    _watch(_group_version, _plural)
