"""Kubernetes Events from worker threads: the one place that relies on how kopf posts them.

``kopf.info``/``kopf.warn`` find the operator's settings and Event queue through
context variables that kopf sets in the task of each handler
(``kopf._core.engines.posting``: ``settings_var``, ``event_queue_var``,
``event_queue_loop_var``), and post from any thread through the loop kept in
them. The shared workers are no kopf handlers: they run their blocking work in
a copy of a context taken inside a handler. ``tests/operator/test_handler_context.py``
fails if kopf stops working this way.

Upstream: kopf (https://github.com/nolar/kopf, issues at
https://github.com/nolar/kopf/issues, component ``kopf._core.engines.posting``).
No issue asking for it was found there; a report would ask for a public way to
post Events from outside a handler (an explicit settings/queue argument to
``kopf.event``), which would replace this module.
"""

from __future__ import annotations

import contextvars


class HandlerContext:
    """A copy of a kopf handler's context, for posting Events from the shared workers."""

    def __init__(self) -> None:
        self._context: contextvars.Context | None = None

    def capture(self) -> None:
        """Keep the current context; call it inside a kopf handler (only the first call counts)."""
        if self._context is None:
            self._context = contextvars.copy_context()

    def fresh(self) -> contextvars.Context:
        """A copy of the kept context (of the current one before any was kept), to run work in."""
        return (self._context or contextvars.copy_context()).copy()
