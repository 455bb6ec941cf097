"""The work queue of the shared workers: wake-ups merge, one worker per instance at a time.

Also the retry of a reconcile that failed to apply a child.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from blacklist_operator.controller.workers import RESYNC_SECONDS
from blacklist_operator.kube.api import KubernetesApi
from blacklist_operator.runtime.config import AddressMap, OperatorConfig
from blacklist_operator.runtime.state import Runtime
from blacklist_operator.runtime.workqueue import Reason, WorkQueue


def test_wake_ups_of_one_instance_merge() -> None:
    async def scenario() -> tuple[tuple[str, str], set[Reason]]:
        queue = WorkQueue()
        queue.wake(("ns", "a"), Reason.STATUS)
        queue.wake(("ns", "a"), Reason.DRIFT)
        return await queue.take()

    assert asyncio.run(scenario()) == (("ns", "a"), {Reason.STATUS, Reason.DRIFT})


def test_an_instance_held_by_a_worker_is_not_handed_out_again_until_done() -> None:
    async def scenario() -> list[tuple[str, str]]:
        queue = WorkQueue()
        queue.wake(("ns", "a"), Reason.STATUS)
        queue.wake(("ns", "b"), Reason.STATUS)
        first, _ = await queue.take()
        queue.wake(first, Reason.DRIFT)  # woken again while held
        second, _ = await queue.take()
        held = asyncio.ensure_future(queue.take())
        await asyncio.sleep(0.01)
        assert not held.done()
        queue.done(first)
        third, reasons = await asyncio.wait_for(held, 1)
        assert reasons == {Reason.DRIFT}
        return [first, second, third]

    assert asyncio.run(scenario()) == [("ns", "a"), ("ns", "b"), ("ns", "a")]


def test_a_failed_reconcile_is_retried_sooner_than_the_resync_and_backs_off() -> None:
    runtime = Runtime(
        config=OperatorConfig(), api=cast(KubernetesApi, None), addresses=AddressMap(None),
        executor=ThreadPoolExecutor(1),
    )  # fmt: skip
    key = ("team", "demo")
    delays = [runtime.retry_delay(key, failed=True) for _ in range(6)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    assert all(delay is not None and delay < RESYNC_SECONDS for delay in delays)
    # Another instance has its own count; a success resets it.
    assert runtime.retry_delay(("team", "other"), failed=True) == 5.0
    assert runtime.retry_delay(key, failed=False) is None
    assert runtime.retry_delay(key, failed=True) == 5.0
