"""The production servers of ``python -m blacklist_service``, and what they run beside the app.

:mod:`.server` picks granian (:mod:`.server_granian`, the default) or gunicorn
(:mod:`.server_gunicorn`), prepares ``STATE_DIR`` and starts the workers; how
many comes from :mod:`.sizing`. ``/metrics`` is served on ``METRICS_PORT`` by
:mod:`.metrics_server`, answering with :mod:`.exposition`. Nothing here is
imported by the app: the servers import the app factory, not the other way round.
"""
