"""The work queue of the shared workers: wake-ups merge, one worker per instance at a time."""

from __future__ import annotations

import asyncio

from blacklist_operator.workqueue import Reason, WorkQueue


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
