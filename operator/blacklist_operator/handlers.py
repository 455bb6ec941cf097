"""The kopf handlers: thin entry points that hand over to the reconcile and the ban sync.

* create / update / resume and a resync timer → :func:`reconcile.reconcile`;
* a daemon per BlacklistService follows its children: the watchers below wake
  it when a child is deleted or drifts (full reconcile) or when a Deployment's
  availability changes (status refresh);
* a daemon per BlacklistService runs the ban sync;
* the deletion handler (behind our finalizer) releases the static PV.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from blacklist_operator import GROUP, PLURAL, VERSION
from blacklist_operator.apply import ApiError, KubernetesApi, load_client
from blacklist_operator.banlist.daemon import run_ban_sync
from blacklist_operator.builders.drift import contains
from blacklist_operator.builders.naming import (
    COMPONENT_BANLIST,
    COMPONENT_LABEL,
    INSTANCE_LABEL,
    MANAGED_BY_LABEL,
)
from blacklist_operator.config import AddressMap, OperatorConfig
from blacklist_operator.model import SpecError
from blacklist_operator.reconcile import Outcome, reconcile, refresh_status, release_storage
from blacklist_operator.runtime import Runtime, runtime_of

# A full reconcile of every BlacklistService this often catches anything the
# watchers missed (for example a change during a watch reconnect).
RESYNC_SECONDS = 60.0
# Child events that arrive together cause one reconcile.
DEBOUNCE_SECONDS = 0.1
MANAGED = {MANAGED_BY_LABEL: "blacklist-operator"}
# (group/version, plural) of the namespaced children whose changes we follow.
WATCHED_CHILDREN = (
    ("apps/v1", "deployments"),
    ("v1", "services"),
    ("v1", "configmaps"),
    ("v1", "persistentvolumeclaims"),
    ("v1", "serviceaccounts"),
    ("v1", "secrets"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("networking.k8s.io/v1", "networkpolicies"),
)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """Own every kopf setting in one place, each with its reason."""
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
    # Reconciles block on API calls; let that many run in parallel.
    settings.execution.max_workers = config.workers
    memo["runtime"] = Runtime(
        config=config,
        api=KubernetesApi(load_client(pool_size=config.workers * 2)),
        addresses=AddressMap(config.database_address_map),
    )


def _post_events(body: kopf.Body, outcome: Outcome) -> None:
    if outcome.created:
        reason, text = ("Created", "Created") if outcome.first else ("ChildRestored", "Restored")
        message = f"{text} {', '.join(outcome.created)}"
        if outcome.first:
            kopf.info(body, reason=reason, message=message)
        else:
            kopf.warn(body, reason=reason, message=message)
    if outcome.failures:
        kopf.warn(body, reason="ApplyFailed", message="; ".join(outcome.failures)[:1000])


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
    _post_events(body, outcome)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_blacklist_service(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Bring every child of the BlacklistService to its spec."""
    _reconcile(body, memo, logger)


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync_blacklist_service(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """The periodic level-based reconcile: the upper bound on undetected drift."""
    _reconcile(body, memo, logger)


@kopf.on.delete(GROUP, VERSION, PLURAL)
def delete_blacklist_service(body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Release the static PersistentVolume; the garbage collector removes the rest."""
    try:
        release_storage(runtime_of(memo), body, logger)
    except ApiError as error:
        raise kopf.TemporaryError(f"could not release the volume: {error}", delay=5) from error


@kopf.daemon(GROUP, VERSION, PLURAL, id="follow-children", cancellation_timeout=5)
async def follow_children(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Reconcile (or refresh the status) when a watcher reports a change of a child."""
    runtime = runtime_of(memo)
    key = (str(namespace), name)
    runtime.children.register(key)
    try:
        while not stopped:
            reasons = await runtime.children.wait(key, 1.0)
            if not reasons:
                continue
            await asyncio.sleep(DEBOUNCE_SECONDS)
            reasons |= await runtime.children.wait(key, 0)
            try:
                if "drift" in reasons:
                    await asyncio.to_thread(_reconcile, body, memo, logger)
                else:
                    await asyncio.to_thread(refresh_status, runtime, body)
            except (ApiError, kopf.TemporaryError, kopf.PermanentError) as error:
                logger.warning(f"Could not follow a change of a child: {error}")
    finally:
        runtime.children.unregister(key)
        runtime.desired.pop(key, None)


@kopf.daemon(GROUP, VERSION, PLURAL, id="sync-ban-list", cancellation_timeout=5)
async def sync_ban_list(
    stopped: kopf.DaemonStopped, body: kopf.Body, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """Keep ``N-banlist`` (and further shards) in sync with the ledger."""
    await run_ban_sync(runtime_of(memo), lambda: body, stopped, logger)


def _child_changed(runtime: Runtime, event_type: str | None, body: kopf.Body) -> None:
    metadata = body.get("metadata") or {}
    labels = metadata.get("labels") or {}
    namespace = str(metadata.get("namespace"))
    instance = labels.get(INSTANCE_LABEL)
    if instance is None or event_type is None:
        return  # Not ours, or the initial listing: the resume handlers cover it.
    key = (namespace, str(instance))
    name = str(metadata.get("name"))
    if labels.get(COMPONENT_LABEL) == COMPONENT_BANLIST:
        text = (body.get("data") or {}).get("addresses")
        written = runtime.written_shards.get((namespace, name))
        if event_type == "DELETED" or (written is not None and text != written):
            runtime.banlists.wake(key, "drift")
        return
    desired = runtime.desired.get(key, {}).get((str(body.get("kind")), name))
    if event_type == "DELETED" or (desired is not None and not contains(body, desired)):
        runtime.children.wake(key, "drift")
    elif body.get("kind") == "Deployment":
        runtime.children.wake(key, "status")


def _watch(group_version: str, plural: str) -> None:
    group, _, version = group_version.rpartition("/")

    @kopf.on.event(group, version, plural, labels=MANAGED, id=f"follow-{plural}")
    async def child_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
        _child_changed(runtime_of(memo), event.get("type"), body)


for _group_version, _plural in WATCHED_CHILDREN:
    _watch(_group_version, _plural)
