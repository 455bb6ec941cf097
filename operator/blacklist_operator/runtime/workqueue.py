"""The work queue the watchers feed and the shared workers drain, and the reasons to wake one.

A reason is a :class:`Reason` member, never a bare string, so a mistyped
reason fails at import (and under mypy) instead of being silently ignored by
the worker that should have acted on it.
"""

from __future__ import annotations

import asyncio
import enum

InstanceKey = tuple[str, str]


class Reason(enum.StrEnum):
    """Why an instance was woken; the worker decides from the set of reasons what to do."""

    # Children queue: a child was deleted or edited (or a Deployment lost availability,
    # which may mean an unwatched child is gone) → full reconcile.
    # Ban-list queue: a ban-list ConfigMap was edited or deleted → the whole list rewritten.
    DRIFT = "drift"
    # Children queue: the periodic resync visits the instance → full reconcile.
    RESYNC = "resync"
    # Children queue: a Deployment's availability changed, or a status came back not
    # Ready → Ready recomputed from the watched Deployments.
    STATUS = "status"
    # Ban-list queue: the instance was deleted → its connection and state are dropped.
    REMOVED = "removed"
    # Ban-list queue: the instance's generation changed → a pass with the new spec.
    SPEC = "spec"
    # Ban-list queue: the database Deployment became available → connect now.
    DATABASE = "database"
    # Ban-list queue: a NOTIFY arrived (or was pending after a pass) → read the ledger.
    LEDGER = "ledger"
    # Ban-list queue: reading the connection failed → close it and connect again.
    BROKEN = "broken"
    # Ban-list queue: a connection attempt ended → the next pass takes its result.
    CONNECTED = "connected"
    # Ban-list queue: the instance's entry of the address map changed → connect now.
    ADDRESSES = "addresses"
    # Ban-list queue: the back-off elapsed, or the pass failed → try again.
    RETRY = "retry"
    # Ban-list queue: the poll interval elapsed → read the ledger in case a NOTIFY was lost.
    POLL = "poll"


class WorkQueue:
    """Instances with pending work and why; an instance is handed to one worker at a time.

    Wake-ups of the same instance merge (their reasons are united), so a burst of
    watch events costs one pass. An instance woken while a worker holds it is
    handed out again once that worker calls :meth:`done`.
    """

    def __init__(self) -> None:
        self._pending: dict[InstanceKey, set[Reason]] = {}
        self._active: set[InstanceKey] = set()
        self._ready = asyncio.Event()

    def wake(self, key: InstanceKey, reason: Reason) -> None:
        """Ask for a pass over ``key`` because of ``reason``."""
        self._pending.setdefault(key, set()).add(reason)
        if key not in self._active:
            self._ready.set()

    def discard(self, key: InstanceKey) -> None:
        """Forget pending work of ``key`` (the instance is gone)."""
        self._pending.pop(key, None)

    async def take(self) -> tuple[InstanceKey, set[Reason]]:
        """The oldest pending instance that no worker holds, and its reasons."""
        while True:
            for key in self._pending:
                if key not in self._active:
                    self._active.add(key)
                    return key, self._pending.pop(key)
            self._ready.clear()
            await self._ready.wait()

    def done(self, key: InstanceKey) -> None:
        """The worker finished ``key``; hand it out again if it was woken meanwhile."""
        self._active.discard(key)
        if key in self._pending:
            self._ready.set()

    def __len__(self) -> int:
        return len(self._pending)
