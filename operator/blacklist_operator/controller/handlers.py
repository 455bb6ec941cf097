"""The kopf handlers: thin entry points that hand over to the reconcile and the shared workers.

* startup owns every kopf setting and starts the shared workers (``workers``,
  ``banlist.sync.daemon``), which follow children, resync periodically and sync the
  ban lists of all instances, with no task per instance; cleanup stops them;
* create / update / resume → :func:`reconcile.children.reconcile`;
* the deletion handler (behind our finalizer, which only a resource with a
  hostPath volume to release carries) releases the static PV.

The watchers that feed the shared workers are in ``watchers`` (imported here,
which registers them).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from blacklist_operator import GROUP, PLURAL, VERSION, metrics
from blacklist_operator.banlist.sync.daemon import BanSyncSupervisor
from blacklist_operator.builders.naming import MANAGED_BY_LABEL
from blacklist_operator.controller.memo import OperatorMemo
from blacklist_operator.controller.watchers import MANAGED, WATCHED_CHILDREN
from blacklist_operator.controller.workers import follow_children, post_events, resync
from blacklist_operator.kube.api import ApiError, KubernetesApi, load_client
from blacklist_operator.model.resource import SpecError
from blacklist_operator.reconcile.children import reconcile
from blacklist_operator.reconcile.volumes import release_storage
from blacklist_operator.runtime.config import AddressMap
from blacklist_operator.runtime.state import Runtime

# Status refreshes and drift reconciles of all instances run on this many tasks.
FOLLOW_WORKERS = 4


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: OperatorMemo, logger: kopf.Logger, **_: Any
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
            f"{MANAGED_BY_LABEL}={MANAGED[MANAGED_BY_LABEL]}"
        )
    config = memo.config
    # Reconciles block on API calls; kopf's handlers and our workers share one pool
    # of that many threads (and one pool of API connections) instead of one each.
    executor = ThreadPoolExecutor(config.workers, thread_name_prefix="reconcile")
    settings.execution.executor = executor
    runtime = Runtime(
        config=config,
        api=KubernetesApi(load_client(pool_size=config.workers + 4)),
        addresses=AddressMap(config.database_address_map),
        executor=executor,
        loop=asyncio.get_running_loop(),
    )
    metrics.count_instances(lambda: len(runtime.instances))
    supervisor = BanSyncSupervisor(runtime, logger)
    loop = asyncio.get_running_loop()
    runtime.tasks = [
        *(loop.create_task(follow_children(runtime, logger)) for _ in range(FOLLOW_WORKERS)),
        loop.create_task(resync(runtime)),
        *supervisor.tasks(),
    ]
    memo.started(runtime, supervisor)


@kopf.on.cleanup()
async def stop_workers(memo: OperatorMemo, **_: Any) -> None:
    """Cancel the shared workers and close every database connection."""
    runtime = memo.runtime
    for task in runtime.tasks:
        task.cancel()
    await asyncio.gather(*runtime.tasks, return_exceptions=True)
    if memo.supervisor is not None:
        memo.supervisor.shutdown()


def _reconcile(body: kopf.Body, memo: OperatorMemo, logger: kopf.Logger) -> None:
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    try:
        outcome = reconcile(memo.runtime, body, logger)
    except SpecError as error:
        kopf.warn(body, reason="InvalidSpec", message=str(error))
        raise kopf.PermanentError(str(error)) from error
    except ApiError as error:
        raise kopf.TemporaryError(f"the API refused: {error}", delay=5) from error
    post_events(body, outcome)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def reconcile_blacklist_service(
    body: kopf.Body, memo: OperatorMemo, logger: kopf.Logger, **_: Any
) -> None:
    """Bring every child of the BlacklistService to its spec."""
    _reconcile(body, memo, logger)


def _holds_a_static_volume(spec: kopf.Spec, **_: Any) -> bool:
    """Whether deleting the resource must release a hostPath PersistentVolume.

    Only such a resource carries our finalizer: the garbage collector removes every
    other child, and a finalizer nobody needs would hold the resource (and its
    namespace) for good once the operator is gone, as ``helm uninstall`` of a
    release that holds both the operator and a BlacklistService does.
    """
    database = spec.get("database") or {}
    storage = database.get("storage") or {}
    if database.get("external") is not None:
        return False  # No volume of ours: the ledger lives in the external database.
    return bool(storage.get("hostPath")) and not storage.get("retainOnDelete", False)


@kopf.on.delete(GROUP, VERSION, PLURAL, when=_holds_a_static_volume)
def delete_blacklist_service(
    body: kopf.Body, memo: OperatorMemo, logger: kopf.Logger, **_: Any
) -> None:
    """Release the static PersistentVolume; the garbage collector removes the rest."""
    try:
        release_storage(memo.runtime, body, logger)
    except ApiError as error:
        raise kopf.TemporaryError(f"could not release the volume: {error}", delay=5) from error
