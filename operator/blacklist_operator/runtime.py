"""State shared by every handler of one operator process, kept in kopf's memo.

kopf gives each object a shallow copy of the operator's memo, so the one
:class:`Runtime` instance in it is shared by the handlers of every object.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from blacklist_operator.apply import KubernetesApi
from blacklist_operator.config import AddressMap, OperatorConfig

InstanceKey = tuple[str, str]
# kopf hands handlers either a logger or an adapter that adds the object to each line.
Logger = logging.Logger | logging.LoggerAdapter[Any]


class Wakeups:
    """Per-instance signals: a watcher wakes the daemon of a BlacklistService, with a reason."""

    def __init__(self) -> None:
        self._events: dict[InstanceKey, asyncio.Event] = {}
        self._reasons: dict[InstanceKey, set[str]] = {}

    def register(self, key: InstanceKey) -> None:
        """Start collecting wake-ups for ``key`` (its daemon runs)."""
        self._events.setdefault(key, asyncio.Event())
        self._reasons.setdefault(key, set())

    def unregister(self, key: InstanceKey) -> None:
        """Stop collecting wake-ups for ``key`` (its daemon stopped)."""
        self._events.pop(key, None)
        self._reasons.pop(key, None)

    def wake(self, key: InstanceKey, reason: str) -> None:
        """Wake the daemon of ``key``, if it runs; wake-ups of the same moment merge."""
        event = self._events.get(key)
        if event is not None:
            self._reasons[key].add(reason)
            event.set()

    async def wait(self, key: InstanceKey, timeout: float) -> set[str]:
        """The reasons of the wake-ups since the last call, waiting up to ``timeout``."""
        event = self._events[key]
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return set()
        event.clear()
        reasons = self._reasons[key]
        self._reasons[key] = set()
        return reasons


@dataclass
class Runtime:
    """The operator's shared state: settings, the API, wake-ups and what was last written."""

    config: OperatorConfig
    api: KubernetesApi
    addresses: AddressMap
    children: Wakeups = field(default_factory=Wakeups)
    banlists: Wakeups = field(default_factory=Wakeups)
    # (namespace, instance) -> {(kind, name): manifest}: what the last reconcile applied.
    desired: dict[InstanceKey, dict[tuple[str, str], dict[str, Any]]] = field(default_factory=dict)
    # (namespace, ConfigMap name) -> the ``addresses`` text the ban sync last wrote.
    written_shards: dict[tuple[str, str], str] = field(default_factory=dict)


def runtime_of(memo: Any) -> Runtime:
    """The :class:`Runtime` stored in kopf's memo by the startup handler."""
    runtime = memo.get("runtime") if hasattr(memo, "get") else None
    if not isinstance(runtime, Runtime):
        raise RuntimeError("the startup handler has not stored the runtime in the memo")
    return runtime
