"""Namespaces created while the operator starts are served: the one fix made inside kopf.

With ``--namespace`` (names or globs), kopf (1.45) learns the namespaces to
serve in ``kopf._core.reactor.observation.namespace_observer``: it lists them
once, then starts a watcher that lists them *again* and watches from that second
list. The events of that second list carry no type, and kopf's
``process_discovered_namespace_event`` drops every such event. A namespace
created between the two lists (the first seconds of the operator, or any
re-list after a broken watch) is in neither and is never served: its resources
wait for the next restart. The test suite met it as a BlacklistService, in a
namespace created just after its operator answered the liveness probe, that
was never reconciled.

The fix takes the second list into account as well (an existing namespace is
added, one being deleted is dropped), which is what kopf does with the first.
It replaces that one function of kopf's, looked up by name when the observer
starts; ``tests/operator/test_namespace_watch.py`` fails if kopf stops
calling it so or changes its signature.

Upstream: kopf (https://github.com/nolar/kopf, issues at
https://github.com/nolar/kopf/issues, component ``kopf._core.reactor.observation``).
No issue about it was found there; kopf's own test
``tests/observation/test_processing_of_namespaces.py::test_initial_listing_is_ignored``
shows that dropping the listed events is deliberate, so a report would ask for the
watcher's re-list to revise the namespaces as the first list does. Once kopf does
that, this module and its ``install()`` call in ``__main__`` go.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any

from kopf._cogs.structs import bodies, references
from kopf._core.reactor import observation

_KOPF_PROCESSOR = observation.process_discovered_namespace_event


async def process_namespace_event(
    *,
    raw_event: bodies.RawEvent,
    namespaces: Collection[references.NamespacePattern],
    insights: references.Insights,
    **_: Any,
) -> None:
    """Revise the served namespaces with one namespace event, a listed one included."""
    async with insights.revised:
        observation.revise_namespaces(
            raw_events=[raw_event], insights=insights, namespaces=namespaces
        )
        insights.revised.notify_all()


def install() -> None:
    """Put :func:`process_namespace_event` in place of kopf's (idempotent).

    Refuses to start if kopf's observer no longer looks the function up by its
    module name, or the function no longer takes the arguments this one
    replaces: serving with a fix that silently does nothing would be worse than
    failing loudly.
    """
    if observation.process_discovered_namespace_event is process_namespace_event:
        return
    name = "process_discovered_namespace_event"
    parameters = set(inspect.signature(_KOPF_PROCESSOR).parameters)
    looked_up = name in observation.namespace_observer.__code__.co_names
    if not looked_up or not {"raw_event", "namespaces", "insights"} <= parameters:
        raise RuntimeError(
            f"kopf's namespace observer or its {name} changed (parameters "
            f"{sorted(parameters)}); review blacklist_operator.kopf_compat.namespace_watch"
        )
    observation.process_discovered_namespace_event = process_namespace_event
