"""The two places that depend on kopf's internals, each with a canary test in tests/operator.

``namespace_watch`` replaces one function of ``kopf._core.reactor.observation``;
``handler_context`` relies on the context variables of ``kopf._core.engines.posting``.
Everything else uses kopf's public names only.
"""
