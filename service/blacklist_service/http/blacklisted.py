"""``GET /blacklisted``: ban the caller's prefix at once, record the hit durably, answer 444.

The ledger row and the alert mail are not made here: the hit goes into the
outbox (fsynced) and the delivery worker takes it from there, so this answers
in milliseconds whatever state the database and the SMTP server are in. The
ban covers the caller's prefix (``BAN_PREFIX_IPV4``/``BAN_PREFIX_IPV6``); the
hit keeps the exact address. The ban and the hit do not depend on each other:
when the ban store cannot take the ban (a full disk), or the outbox the hit (a
lock held for seconds, a full disk), the failure is logged and counted and the
other one is still made, and the answer is still 444. A hit that reaches the
ledger bans the caller on every replica through the operator's list (and, run
alone, at the next start).
"""

from __future__ import annotations

import logging
import sqlite3

from flask import Blueprint, Response, request

from blacklist_contract.prefixes import IPV4, covering, parse_address
from blacklist_service.address_keys import address_key
from blacklist_service.bans.notices import log_added
from blacklist_service.delivery.outbox import Hit
from blacklist_service.durations import ban_until
from blacklist_service.http.guard import CLIENT_ADDRESS
from blacklist_service.metrics import BAN_FAILURES, HITS, RECORD_FAILURES
from blacklist_service.state import service_state

blueprint = Blueprint("blacklisted", __name__)
logger = logging.getLogger("blacklist_service.blacklisted")
BLACKLISTED_STATUS = 444  # nginx's "no response"; what the original deployment answered


@blueprint.get("/blacklisted")
def blacklisted() -> Response:
    """Ban the caller's prefix, record the hit, answer 444."""
    state = service_state()
    settings = state.settings
    address: str = request.environ[CLIENT_ADDRESS]
    # A security event, what the endpoint is for: INFO with an event field, not an error.
    logger.info(
        "Access to this endpoint is blocked!",
        extra={"event": "ban", "client_address": address, "path": request.path},
    )
    hit = Hit.now(address, request.path)
    parsed = parse_address(address)
    if parsed is not None and address_key(address) not in settings.allowlist:
        version, number = parsed
        length = settings.ban_prefix_ipv4 if version == IPV4 else settings.ban_prefix_ipv6
        try:
            fresh = state.bans.ban(
                [(covering(version, number, length), ban_until(settings.ban_duration))]
            )
        except OSError:
            BAN_FAILURES.inc()
            logger.exception(
                "Could not write the ban of %s to the ban store (event %s): the hit is still "
                "recorded, and its ledger row bans it through the ban list",
                address,
                hit.event_id,
            )
        else:
            log_added(fresh, "a request")
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
