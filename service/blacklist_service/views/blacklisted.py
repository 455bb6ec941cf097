"""``GET /blacklisted``: ban the caller at once, record the hit durably, answer 444.

The ledger row and the alert mail are not made here: the hit goes into the
outbox (fsynced) and the delivery worker takes it from there, so this answers
in milliseconds whatever state the database and the SMTP server are in. The
ban comes first and does not depend on the outbox: when the outbox cannot take
the hit (a lock held for seconds, a full disk) the failure is logged and
counted, the caller is banned all the same, and the answer is still 444.
"""

from __future__ import annotations

import logging
import sqlite3

from flask import Blueprint, Response, request

from blacklist_service.addresses import address_key
from blacklist_service.banlog import log_bans
from blacklist_service.durations import ban_until
from blacklist_service.metrics import HITS, RECORD_FAILURES
from blacklist_service.outbox import Hit
from blacklist_service.state import service_state
from blacklist_service.views.guard import CLIENT_ADDRESS

blueprint = Blueprint("blacklisted", __name__)
logger = logging.getLogger("blacklist_service.blacklisted")
BLACKLISTED_STATUS = 444  # nginx's "no response"; what the original deployment answered


@blueprint.get("/blacklisted")
def blacklisted() -> Response:
    """Ban the caller, record the hit, answer 444."""
    state = service_state()
    address: str = request.environ[CLIENT_ADDRESS]
    # A security event, what the endpoint is for: INFO with an event field, not an error.
    logger.info(
        "Access to this endpoint is blocked!",
        extra={"event": "ban", "client_address": address, "path": request.path},
    )
    hit = Hit.now(address, request.path)
    key = address_key(address)
    if key is not None and key not in state.settings.allowlist:
        log_bans(state.bans, [key], "a request", ban_until(state.settings.ban_duration))
    try:
        state.outbox.record(hit)
    except (sqlite3.Error, OSError):
        RECORD_FAILURES.inc()
        logger.exception(
            "Could not record the hit of %s in the outbox (event %s): it is banned here, "
            "but no ledger row or alert mail will follow",
            address,
            hit.event_id,
        )
    else:
        HITS.inc()
    return Response(b"", status=BLACKLISTED_STATUS)
