"""``GET /blacklisted``: record the caller durably, ban it at once, answer 444.

The ledger row and the alert mail are not made here: the hit goes into the
outbox (fsynced) and the delivery worker takes it from there, so this answers
in milliseconds whatever state the database and the SMTP server are in.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from blacklist_service.addresses import address_key
from blacklist_service.banlog import log_bans
from blacklist_service.durations import ban_until
from blacklist_service.metrics import HITS
from blacklist_service.outbox import Hit
from blacklist_service.state import service_state
from blacklist_service.views.guard import CLIENT_ADDRESS

blueprint = Blueprint("blacklisted", __name__)
logger = logging.getLogger("blacklist_service.blacklisted")
BLACKLISTED_STATUS = 444  # nginx's "no response"; what the original deployment answered


@blueprint.get("/blacklisted")
def blacklisted() -> Response:
    """Record the hit, ban the caller, answer 444."""
    state = service_state()
    address: str = request.environ[CLIENT_ADDRESS]
    logger.error("Access to this endpoint is blocked!")
    state.outbox.record(Hit.now(address, request.path))
    HITS.inc()
    key = address_key(address)
    if key is not None and key not in state.settings.allowlist:
        log_bans(state.bans, [key], "a request", ban_until(state.settings.ban_duration))
    return Response(b"", status=BLACKLISTED_STATUS)
