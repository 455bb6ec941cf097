"""The shared workers that follow the children of every BlacklistService.

Instead of a kopf daemon and a kopf timer per instance (two tasks, their
memory and a burst of reconciles every period), a few worker tasks take
instances from one queue that the watchers feed:

* ``Reason.DRIFT`` (a child was deleted or edited) and ``Reason.RESYNC`` → the
  full reconcile;
* ``Reason.STATUS`` (a Deployment's availability changed, or a status write came back
  not ready) → Ready recomputed from the watched Deployments: no reads, at
  most one status write.

The resync visits every instance once per ``RESYNC_SECONDS``, spread evenly
over the period, as the upper bound on drift that no watch event reported.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import kopf

from blacklist_operator.kube.api import ApiError
from blacklist_operator.logs import about
from blacklist_operator.model.resource import SpecError
from blacklist_operator.reconcile.children import reconcile
from blacklist_operator.reconcile.outcome import Outcome
from blacklist_operator.reconcile.readiness import refresh_status
from blacklist_operator.runtime.state import Logger, Runtime
from blacklist_operator.runtime.workqueue import Reason

# Every instance gets a full reconcile this often even when no event reported a change.
RESYNC_SECONDS = 300.0
FULL_RECONCILE = frozenset({Reason.DRIFT, Reason.RESYNC})


def post_events(body: Any, outcome: Outcome) -> None:
    """Kubernetes Events for what a reconcile created or could not apply."""
    if outcome.namespace_terminating:
        return
    if outcome.created:
        reason, text = ("Created", "Created") if outcome.first else ("ChildRestored", "Restored")
        message = f"{text} {', '.join(outcome.created)}"
        if outcome.first:
            kopf.info(body, reason=reason, message=message)
        else:
            kopf.warn(body, reason=reason, message=message)
    for reason, message in outcome.notices:
        kopf.info(body, reason=reason, message=message[:1000])
    for reason, message in outcome.warnings:
        kopf.warn(body, reason=reason, message=message[:1000])
    if outcome.failures:
        kopf.warn(body, reason="ApplyFailed", message="; ".join(outcome.failures)[:1000])
    if outcome.database_secret_problem is not None:
        kopf.warn(
            body, reason=outcome.database_secret_reason, message=outcome.database_secret_problem
        )


def _follow(runtime: Runtime, body: dict[str, Any], reasons: set[Reason], logger: Logger) -> None:
    """One pass over an instance (blocking, in the shared executor)."""
    if reasons & FULL_RECONCILE:
        # A SpecError is reported by the reconcile itself, as Ready=False InvalidSpec.
        with contextlib.suppress(SpecError):
            post_events(body, reconcile(runtime, body, logger))
    else:
        refresh_status(runtime, body)


async def follow_children(runtime: Runtime, logger: Logger) -> None:
    """One worker: take an instance from the queue, reconcile or refresh it, repeat."""
    loop = asyncio.get_running_loop()
    queue = runtime.children
    while True:
        key, reasons = await queue.take()
        try:
            body = runtime.instances.get(key)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                continue
            # A copy of a kopf handler's context carries kopf's Event queue to the thread.
            context = runtime.handler_context.fresh()
            await loop.run_in_executor(
                runtime.executor, context.run, _follow, runtime, body, reasons, about(logger, *key)
            )
        except ApiError as error:
            logger.warning(f"Could not follow a change of {key[0]}/{key[1]}: {error}")
        except Exception as error:  # one instance must never stop the others
            logger.exception(f"Following {key[0]}/{key[1]} failed: {error}")
        finally:
            queue.done(key)


async def resync(runtime: Runtime, period: float = RESYNC_SECONDS) -> None:
    """Wake every instance for a full reconcile once per ``period``, evenly spread."""
    while True:
        keys = list(runtime.instances)
        if not keys:
            await asyncio.sleep(min(period, 10.0))
            continue
        for key in keys:
            await asyncio.sleep(period / len(keys))
            if key in runtime.instances:
                runtime.children.wake(key, Reason.RESYNC)
