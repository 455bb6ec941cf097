"""``/healthz`` (the process answers) and ``/readyz`` (it enforces every ban it should).

Neither checks the SMTP server, and neither fails because the database goes
down later: the service serves and bans while they are down (the outbox waits
for them), so restarting it or taking it out of the Service would only make
things worse. What readiness does wait for is the replica's knowledge of the
bans made before it started: in a cluster, the first read of the operator's
ban list; run alone, the load of the bans recorded in its ledger. Until then a
banned address would be let in, so a replica that starts while its database is
down stays not ready (it still answers, and bans) until the database answers.
"""

from __future__ import annotations

import sqlite3

from flask import Blueprint, Response

from blacklist_service.markers import bans_loaded_marker, synced_marker
from blacklist_service.state import service_state

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> Response:
    """Liveness: the worker answers."""
    return Response("ok\n", mimetype="text/plain")


@blueprint.get("/readyz")
def readyz() -> Response:
    """Readiness: the outbox is usable and the bans made before this start are known.

    In a cluster those come with the operator's ban list (the ledger's copy);
    run alone, from the ledger itself.
    """
    state = service_state()
    try:
        state.outbox.counts()
    except (sqlite3.Error, OSError) as error:
        return Response(f"outbox unavailable: {error}\n", status=503, mimetype="text/plain")
    state_dir = state.settings.state_dir
    if state.settings.in_cluster:
        if not synced_marker(state_dir).exists():
            return Response("ban list not synced yet\n", status=503, mimetype="text/plain")
    elif not bans_loaded_marker(state_dir).exists():
        return Response("ledger bans not loaded yet\n", status=503, mimetype="text/plain")
    return Response("ok\n", mimetype="text/plain")
