"""``/healthz`` (the process answers) and ``/readyz`` (it can take traffic).

Neither checks the database or the SMTP server: the service serves and bans
while they are down (the outbox waits for them), so restarting it or taking it
out of the Service would only make things worse.
"""

from __future__ import annotations

import sqlite3

from flask import Blueprint, Response

from blacklist_service.state import service_state
from blacklist_service.watcher import synced_marker

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the worker answers."""
    return Response("ok\n", mimetype="text/plain")


@blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: the outbox is usable and, in a cluster, the ban list was read once."""
    state = service_state()
    try:
        state.outbox.counts()
    except sqlite3.Error as error:
        return Response(f"outbox unavailable: {error}\n", status=503, mimetype="text/plain")
    if state.settings.in_cluster and not synced_marker(state.settings.state_dir).exists():
        return Response("ban list not synced yet\n", status=503, mimetype="text/plain")
    return Response("ok\n", mimetype="text/plain")
