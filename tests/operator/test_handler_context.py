"""kopf posts an Event from a worker thread run in a copied handler context.

``blacklist_operator.kopf_compat.handler_context`` relies on kopf internals: the context
variables through which ``kopf.info``/``kopf.warn`` find the settings and the
Event queue. These tests fail when a kopf upgrade renames them or stops
posting through them, before the operator silently stops posting Events.
"""

from __future__ import annotations

import asyncio
import threading

import kopf
from kopf._core.engines import posting

from blacklist_operator.kopf_compat.handler_context import HandlerContext

BODY = {
    "apiVersion": "blacklist.dev/v1",
    "kind": "BlacklistService",
    "metadata": {"name": "web", "namespace": "team", "uid": "1234"},
}


def test_kopf_keeps_its_posting_context_variables() -> None:
    for name in ("settings_var", "event_queue_var", "event_queue_loop_var"):
        assert hasattr(posting, name), f"kopf._core.engines.posting.{name} is gone"


def test_an_event_posted_from_a_thread_in_a_captured_context_reaches_kopfs_queue() -> None:
    async def scenario() -> posting.K8sEvent:
        queue: asyncio.Queue[posting.K8sEvent] = asyncio.Queue()
        captured = HandlerContext()

        async def handler() -> None:
            # What kopf sets up for the task of every handler.
            posting.settings_var.set(kopf.OperatorSettings())
            posting.event_queue_loop_var.set(asyncio.get_running_loop())
            posting.event_queue_var.set(queue)
            captured.capture()

        await asyncio.create_task(handler())
        context = captured.fresh()
        thread = threading.Thread(
            target=context.run,
            args=(kopf.warn, BODY),
            kwargs={"reason": "ChildRestored", "message": "Restored Service web"},
        )
        thread.start()
        thread.join()
        return await asyncio.wait_for(queue.get(), 5)

    event = asyncio.run(scenario())
    assert (event.type, event.reason, event.ref["name"]) == ("Warning", "ChildRestored", "web")
