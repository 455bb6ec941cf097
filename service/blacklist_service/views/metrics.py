"""``GET /metrics``: Prometheus text format (refused to banned addresses like any route)."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST

from blacklist_service.markers import ledger_marker
from blacklist_service.metrics import exposition
from blacklist_service.state import service_state

blueprint = Blueprint("metrics", __name__)


@blueprint.get("/metrics")
def metrics() -> Response:
    """Every metric of the replica."""
    state = service_state()
    body = exposition(state.bans, state.outbox, ledger_marker(state.settings.state_dir))
    return Response(body, content_type=CONTENT_TYPE_LATEST)
