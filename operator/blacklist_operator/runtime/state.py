"""State shared by every handler and worker of one operator process, kept in kopf's memo.

The one :class:`Runtime` (in :class:`memo.OperatorMemo`) is shared by the
handlers of every object and the shared workers. It holds what the shared
workers need instead of one kopf daemon per BlacklistService: the latest body
of every instance (from the watch stream), the availability of every child
Deployment (from its watch stream, so a status refresh needs no read), and the
work queues the watchers feed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from blacklist_operator.builders.banlist import banlist_names, payload_digest
from blacklist_operator.builders.naming import (
    database_name_of,
    service_name_of,
)
from blacklist_operator.kopf_compat.handler_context import HandlerContext
from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.model.external import ExternalDatabase
from blacklist_operator.runtime.config import AddressMap, OperatorConfig
from blacklist_operator.runtime.rollout import Decision, RollState, decide
from blacklist_operator.runtime.workqueue import InstanceKey, Reason, WorkQueue

# A reconcile that could not apply a child is retried after this long, doubling up to the max.
FAILURE_RETRY_SECONDS = 5.0
FAILURE_RETRY_MAX_SECONDS = 60.0

# kopf hands handlers either a logger or an adapter that adds the object to each line.
Logger = logging.Logger | logging.LoggerAdapter[Any]


class DeploymentProgress(NamedTuple):
    """What a child Deployment's status says: all replicas available (and why not), its counts."""

    available: bool
    detail: str
    # status.replicas and status.readyReplicas, reported in the resource's status.
    replicas: int = 0
    ready_replicas: int = 0
    # spec.replicas of the Deployment (None while it is missing): what it wants ready.
    wanted: int | None = None
    # The image of its pod template's first container (the service's, or PostgreSQL's).
    image: str | None = None
    # A rollout is under way: a template not yet observed, or pods of an older one left.
    rolling_out: bool = False


class Instances:
    """The latest body of every BlacklistService, as the watch stream delivered it."""

    def __init__(self) -> None:
        self._bodies: dict[InstanceKey, dict[str, Any]] = {}

    def update(self, body: Mapping[str, Any]) -> InstanceKey:
        """Remember ``body`` (a raw watch-event object); return its key."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace")), str(metadata.get("name")))
        # managedFields is the bulk of a body and nothing here reads it.
        kept = {name: value for name, value in metadata.items() if name != "managedFields"}
        self._bodies[key] = {**body, "metadata": kept}
        return key

    def remove(self, key: InstanceKey) -> None:
        """Forget a deleted instance."""
        self._bodies.pop(key, None)

    def get(self, key: InstanceKey) -> dict[str, Any] | None:
        """The latest body of ``key``, or ``None`` once it is gone."""
        return self._bodies.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._bodies

    def __iter__(self) -> Iterator[InstanceKey]:
        return iter(list(self._bodies))

    def __len__(self) -> int:
        return len(self._bodies)


class AbsentChildren:
    """Optional children (Ingress, budget, autoscaler, ServiceMonitor) known not to exist.

    The reconcile deletes the optional children the spec does not ask for; without
    this, every reconcile of every instance would read each of them by name to find
    it missing. One is known absent once a read found nothing or our delete
    succeeded, and is forgotten when we apply it or a watch event shows it exists.
    A restarted operator knows nothing and reads each once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._absent: set[tuple[str, str, str]] = set()

    def known(self, namespace: str, kind: str, name: str) -> bool:
        """Whether the child is known not to exist."""
        with self._lock:
            return (namespace, kind, name) in self._absent

    def mark(self, namespace: str, kind: str, name: str) -> None:
        """The child does not exist (a read found nothing, or we deleted it)."""
        with self._lock:
            self._absent.add((namespace, kind, name))

    def forget(self, namespace: str, kind: str, name: str) -> None:
        """The child may exist again: it was applied, or a watch event showed it."""
        with self._lock:
            self._absent.discard((namespace, kind, name))

    def __len__(self) -> int:
        with self._lock:
            return len(self._absent)


class WrittenBanList:
    """Digests of the ban-list ConfigMaps the sync last wrote, shared by its threads and the loop.

    A watch event whose ``data``/``binaryData`` digest (:func:`payload_digest`) is
    none of the last few written to that name is an edit by someone else. The
    last few, not the last one: under load the head is written several times a
    second, and the event of an earlier write arrives after the next one.
    """

    def __init__(self, remembered: int = 32) -> None:
        self._digests: dict[tuple[str, str], deque[bytes]] = {}
        self._remembered = remembered
        self._lock = threading.Lock()

    def remember(self, namespace: str, name: str, body: Mapping[str, Any]) -> None:
        """Record that ConfigMap ``name`` now holds the payload of ``body``."""
        digest = payload_digest(body)
        with self._lock:
            recent = self._digests.setdefault((namespace, name), deque(maxlen=self._remembered))
            recent.append(digest)

    def forget(self, namespace: str, name: str) -> None:
        """Forget ConfigMap ``name`` (the sync deleted it)."""
        with self._lock:
            self._digests.pop((namespace, name), None)

    def forget_instance(self, namespace: str, instance: str) -> None:
        """Forget every ConfigMap of ``instance``'s ban list (and no other instance's)."""
        with self._lock:
            for name in banlist_names(instance):
                self._digests.pop((namespace, name), None)

    def differs(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> bool:
        """Whether ``body`` holds what the sync did not write (False for a name it never wrote)."""
        with self._lock:
            recent = self._digests.get((namespace, name))
            written = set(recent) if recent is not None else None
        return written is not None and (body is None or payload_digest(body) not in written)

    def __len__(self) -> int:
        with self._lock:
            return len(self._digests)


class OwnedChildren:
    """Children known to be this operator's, so the reconcile need not read them first.

    Before it applies a child the reconcile makes sure that an object of that name is
    its own (a forced apply would take over anyone's). One is known once a read showed
    it ours or our apply succeeded, and is forgotten when a watch event shows it gone
    (or no longer labelled ours), so a foreign object put in its place is read again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (namespace, kind, name) -> uid of the resource it belongs to.
        self._owners: dict[tuple[str, str, str], str] = {}

    def known(self, namespace: str, kind: str, name: str, owner_uid: str) -> bool:
        """Whether the child is known to be the resource ``owner_uid``'s."""
        with self._lock:
            return self._owners.get((namespace, kind, name)) == owner_uid

    def mark(self, namespace: str, kind: str, name: str, owner_uid: str) -> None:
        """The child is the resource ``owner_uid``'s (we applied it)."""
        with self._lock:
            self._owners[(namespace, kind, name)] = owner_uid

    def forget(self, namespace: str, kind: str, name: str) -> None:
        """The child is gone: whatever takes its name is read before it is applied."""
        with self._lock:
            self._owners.pop((namespace, kind, name), None)


class HeldImages(NamedTuple):
    """The images a resource waiting for its turn keeps running (None: not held back)."""

    service: str | None
    database: str | None


class RolloutGate:
    """Who rolls onto the operator's new default images: the state behind :mod:`.rollout`.

    ``started``: the resources let roll, until a decision sees their roll finished;
    ``waiting``: the ones held back, with the images they keep, so that the drift
    check expects those and the end of a roll wakes the next in line. Shared by the
    reconcile threads: every decision is taken and recorded under one lock, so two
    resources are never let roll at once.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: set[InstanceKey] = set()
        self._waiting: dict[InstanceKey, HeldImages] = {}
        # Whether each resource's spec, at a generation, is one the reconcile can apply.
        self._appliable: dict[InstanceKey, tuple[int, bool]] = {}

    def decide(
        self, key: InstanceKey, states: Mapping[InstanceKey, RollState]
    ) -> tuple[Decision, bool]:
        """Decide for ``key`` (:func:`rollout.decide`) and record it.

        Also True when this changes what ``key`` does: it starts rolling, or starts waiting.
        """
        with self._lock:
            decision = decide(key, states, self._started)
            self._started -= decision.finished
            if decision.may_roll:
                changed = key not in self._started
                self._started.add(key)
                self._waiting.pop(key, None)
            else:
                changed = key not in self._waiting
        return decision, changed

    def hold(self, key: InstanceKey, images: HeldImages) -> None:
        """``key`` waits for its turn, running ``images``."""
        with self._lock:
            self._waiting[key] = images

    def current(self, key: InstanceKey) -> None:
        """``key`` runs its default images (or pins its own): nothing to hold back."""
        with self._lock:
            self._waiting.pop(key, None)

    def forget(self, key: InstanceKey) -> None:
        """``key`` is gone."""
        with self._lock:
            self._waiting.pop(key, None)
            self._started.discard(key)
            self._appliable.pop(key, None)

    def appliable(self, key: InstanceKey, generation: int, check: Callable[[], bool]) -> bool:
        """Whether ``key``'s spec of ``generation`` can be applied: ``check()``, once for each.

        Every decision looks at every resource: parsing each spec every time would cost
        the square of their number during a roll.
        """
        with self._lock:
            known = self._appliable.get(key)
        if known is not None and known[0] == generation:
            return known[1]
        result = check()
        with self._lock:
            self._appliable[key] = (generation, result)
        return result

    def held(self, key: InstanceKey) -> HeldImages | None:
        """The images ``key`` keeps while it waits, or None."""
        with self._lock:
            return self._waiting.get(key)

    def next_waiting(self) -> InstanceKey | None:
        """The first waiting resource in ``(namespace, name)`` order, or None."""
        with self._lock:
            return min(self._waiting, default=None)


@dataclass
class Runtime:
    """The operator's shared state: settings, the API, the instances and the work queues."""

    config: OperatorConfig
    api: KubernetesApi
    addresses: AddressMap
    # Blocking work (API calls, database I/O) of the shared workers runs here.
    executor: ThreadPoolExecutor
    # The operator's event loop, where the work queues live (reconciles run in threads).
    loop: asyncio.AbstractEventLoop | None = None
    instances: Instances = field(default_factory=Instances)
    # Full reconciles (DRIFT, RESYNC) and status refreshes (STATUS) of instances.
    children: WorkQueue = field(default_factory=WorkQueue)
    # Ban-sync passes (LEDGER, DRIFT, DATABASE, SPEC, ...: see workqueue.Reason).
    banlists: WorkQueue = field(default_factory=WorkQueue)
    # (namespace, Deployment name) -> its progress, from the watch.
    deployments: dict[tuple[str, str], DeploymentProgress] = field(default_factory=dict)
    # Optional children known not to exist, so the reconcile does not read them.
    absent_children: AbsentChildren = field(default_factory=AbsentChildren)
    # Children known to be ours, so the reconcile does not read them before applying.
    owned_children: OwnedChildren = field(default_factory=OwnedChildren)
    # What the ban sync last wrote into each ban-list ConfigMap.
    written_banlist: WrittenBanList = field(default_factory=lambda: WrittenBanList())
    # Which resource rolls onto the operator's new default images, and which wait.
    rollout: RolloutGate = field(default_factory=RolloutGate)
    # A context of a kopf handler: kopf.info/warn find kopf's Event queue through it.
    handler_context: HandlerContext = field(default_factory=HandlerContext)
    # The shared worker tasks, cancelled by the cleanup handler.
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # The external database each instance's last reconcile built its children for, so the
    # drift check (which reads no Secret) rebuilds the same ConfigMap N-db and Deployment N.
    external_databases: dict[InstanceKey, ExternalDatabase] = field(default_factory=dict)
    # Instances with a full reconcile scheduled by reconcile_later.
    _reconciling_later: set[InstanceKey] = field(default_factory=set)
    # Instances whose last reconciles failed to apply a child: how many in a row.
    _failed_reconciles: dict[InstanceKey, int] = field(default_factory=dict)
    _failures_lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_delay(self, key: InstanceKey, failed: bool) -> float | None:
        """After a reconcile of ``key``: the delay of its retry, or None when it succeeded.

        A child the API refused to apply, update or delete (a timeout, a 5xx, a
        conflict) is tried again without waiting for the next event or resync:
        after 5 s, doubling with each failure in a row up to a minute.
        """
        with self._failures_lock:
            if not failed:
                self._failed_reconciles.pop(key, None)
                return None
            count = self._failed_reconciles.get(key, 0)
            self._failed_reconciles[key] = count + 1
        return float(min(FAILURE_RETRY_SECONDS * 2**count, FAILURE_RETRY_MAX_SECONDS))

    def reconcile_later(self, key: InstanceKey, delay: float) -> None:
        """Queue a full reconcile of ``key`` in ``delay`` seconds (from any thread; once).

        For what no watch reports, such as a fixed Secret of an external database.
        """
        if self.loop is None:
            return
        self.loop.call_soon_threadsafe(self._schedule_reconcile, key, delay)

    def _schedule_reconcile(self, key: InstanceKey, delay: float) -> None:
        if key in self._reconciling_later or self.loop is None:
            return
        self._reconciling_later.add(key)
        self.loop.call_later(delay, self._reconcile_now, key)

    def _reconcile_now(self, key: InstanceKey) -> None:
        self._reconciling_later.discard(key)
        if key in self.instances:
            self.children.wake(key, Reason.RESYNC)

    def remember_external(
        self, namespace: str, instance: str, external: ExternalDatabase | None
    ) -> None:
        """Keep the external database the reconcile applied (None: none, or its Secret unusable)."""
        if external is None:
            self.external_databases.pop((namespace, instance), None)
        else:
            self.external_databases[(namespace, instance)] = external

    def forget_deployments(self, key: InstanceKey) -> None:
        """Drop what is kept of a deleted instance: Deployments, external database, roll."""
        namespace, instance = key
        self.deployments.pop((namespace, service_name_of(instance)), None)
        self.deployments.pop((namespace, database_name_of(instance)), None)
        self.external_databases.pop(key, None)
        self.rollout.forget(key)

    def database_available(self, key: InstanceKey) -> bool:
        """Whether the instance's database Deployment is available, as its watch last said.

        An external database has no Deployment to wait for: always True.
        """
        body = self.instances.get(key) or {}
        if ((body.get("spec") or {}).get("database") or {}).get("external") is not None:
            return True
        namespace, instance = key
        progress = self.deployments.get((namespace, database_name_of(instance)))
        return bool(progress and progress.available)
