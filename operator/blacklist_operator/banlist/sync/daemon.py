"""The ban sync of every BlacklistService, multiplexed over a few shared workers: the scheduling.

A few worker tasks take instances from ``Runtime.banlists`` and run one pass
each (:mod:`.step`) in a small thread pool of their own, so an unreachable
database never delays a reconcile. Between passes the supervisor keeps, per
instance, one timer for the next pass (the poll interval, or the back-off) and
the event loop's watch on its connection (:mod:`.connections`), so a new ban
reaches the ConfigMaps within a database round trip and one apply. A changed
entry of the address map retries the instances it concerns at once.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from blacklist_operator import metrics
from blacklist_operator.banlist.sync.connections import (
    MAX_BACKOFF_SECONDS,
    Connector,
    DatabaseLink,
    close_unclaimed,
)
from blacklist_operator.banlist.sync.mirror import BanListSync
from blacklist_operator.banlist.sync.step import InstanceState, run_pass
from blacklist_operator.logs import about
from blacklist_operator.runtime.state import Logger, Runtime
from blacklist_operator.runtime.workqueue import InstanceKey, Reason

# How often the address map file is checked for changed entries.
ADDRESS_MAP_CHECK_SECONDS = 2.0


class BanSyncSupervisor:
    """Runs the ban sync of every instance: a few workers take instances from a queue."""

    def __init__(self, runtime: Runtime, logger: Logger, threads: int = 4) -> None:
        self._runtime = runtime
        self._logger = logger
        self._threads = threads
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="ban-sync")
        self._connector = Connector(runtime)
        self._states: dict[InstanceKey, InstanceState] = {}
        self._timers: dict[InstanceKey, asyncio.TimerHandle] = {}

    def tasks(self) -> list[asyncio.Task[None]]:
        """The worker tasks and the address-map check, to be cancelled at shutdown."""
        loop = asyncio.get_running_loop()
        workers = [loop.create_task(self._work()) for _ in range(self._threads)]
        return [*workers, loop.create_task(self._watch_address_map())]

    def shutdown(self) -> None:
        """Close every connection and stop the threads (at operator exit)."""
        for key in list(self._states):
            self._forget(key)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._connector.shutdown()

    async def _watch_address_map(self) -> None:
        loop = asyncio.get_running_loop()
        known = await loop.run_in_executor(self._executor, self._runtime.addresses.entries)
        while True:
            await asyncio.sleep(ADDRESS_MAP_CHECK_SECONDS)
            entries = await loop.run_in_executor(self._executor, self._runtime.addresses.entries)
            changed = {k for k in entries.keys() | known.keys() if entries.get(k) != known.get(k)}
            known = entries
            for entry in changed:
                namespace, _, name = entry.partition("/")
                state = self._states.get((namespace, name))
                # Only the instances whose address changed retry at once, not every one waiting.
                if state is not None and state.link.connection is None:
                    self._runtime.banlists.wake((namespace, name), Reason.ADDRESSES)

    async def _work(self) -> None:
        queue = self._runtime.banlists
        while True:
            key, reasons = await queue.take()
            try:
                await self._pass(key, reasons)
            except Exception as error:  # one instance must never stop the others
                self._logger.exception(f"Ban sync of {key[0]}/{key[1]} failed: {error}")
                self._schedule(key, MAX_BACKOFF_SECONDS, Reason.RETRY)
            finally:
                queue.done(key)

    def _forget(self, key: InstanceKey) -> None:
        state = self._states.pop(key, None)
        if state is None:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        state.link.close()
        self._runtime.written_banlist.forget_instance(*key)
        metrics.forget_instance(key)

    def _schedule(self, key: InstanceKey, delay: float, reason: Reason) -> None:
        """The next pass of ``key`` in ``delay`` seconds (replacing the one planned)."""
        if key not in self._states:
            return
        timer = self._timers.get(key)
        if timer is not None:
            timer.cancel()
        self._timers[key] = asyncio.get_running_loop().call_later(
            delay, self._runtime.banlists.wake, key, reason
        )

    def _state(self, key: InstanceKey) -> InstanceState:
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = InstanceState(
                BanListSync(
                    self._runtime.api,
                    self._runtime.written_banlist,
                    self._runtime.config.max_bans,
                ),
                DatabaseLink.first(self._runtime.database_available(key)),
            )
            metrics.ban_sync_started(key)
        return state

    async def _pass(self, key: InstanceKey, reasons: set[Reason]) -> None:
        body = self._runtime.instances.get(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            self._forget(key)
            return
        state = self._state(key)
        link = state.link
        connect_error = link.take_attempt()
        # The worker thread reads the connection now; the loop must not poll it meanwhile.
        link.unwatch()
        # A copy of a kopf handler's context carries kopf's Event queue to the thread.
        context = self._runtime.handler_context.fresh()
        next_pass = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            context.run,
            run_pass,
            self._runtime,
            about(self._logger, *key),
            key,
            state,
            reasons,
            connect_error,
        )
        if next_pass.connect and link.connecting is None:
            opened = functools.partial(self._opened, key, state)
            link.connecting = self._connector.start(key, opened)
        if link.watch(functools.partial(self._on_readable, key)):
            self._runtime.banlists.wake(key, Reason.LEDGER)
        self._schedule(key, next_pass.delay, next_pass.reason)

    def _on_readable(self, key: InstanceKey) -> None:
        state = self._states.get(key)
        if state is None:
            return
        reason = state.link.poll()
        if reason is not None:
            self._runtime.banlists.wake(key, reason)

    def _opened(self, key: InstanceKey, state: InstanceState, attempt: asyncio.Future[Any]) -> None:
        """A connection attempt ended: its instance's next pass takes the result."""
        if self._states.get(key) is state:
            self._runtime.banlists.wake(key, Reason.CONNECTED)
        else:
            close_unclaimed(attempt)
