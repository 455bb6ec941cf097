"""The log lines of new bans, as the original deployment wrote them."""

from __future__ import annotations

import logging

from blacklist_contract.prefixes import Prefix, prefix_text

logger = logging.getLogger("blacklist_service.bans")
# One warning per prefix, as the original did, up to this many per batch; a bulk
# load (a new snapshot of a million bans) gets one summary line instead.
DETAILED_LIMIT = 100


def log_added(fresh: list[Prefix], source: str) -> None:
    """Warn about each newly banned prefix (or sum up a bulk load)."""
    if len(fresh) <= DETAILED_LIMIT:
        for prefix in fresh:
            logger.warning("%s added to ban list.", prefix_text(prefix))
    else:
        logger.warning("%d prefixes added to ban list from %s.", len(fresh), source)
