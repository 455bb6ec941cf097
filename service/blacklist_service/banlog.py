"""Adding bans with the log line the original deployment wrote for each."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from blacklist_service.addresses import key_text
from blacklist_service.banstore import BanStore

logger = logging.getLogger("blacklist_service.bans")
# One warning per address, as the original did, up to this many per batch; a
# bulk load (a restart with a million bans) gets one summary line instead.
DETAILED_LIMIT = 100


def log_bans(bans: BanStore, keys: Iterable[int], source: str) -> list[int]:
    """Ban ``keys``; warn about each newly banned address; return the new keys."""
    fresh = bans.add(keys)
    if len(fresh) <= DETAILED_LIMIT:
        for key in fresh:
            logger.warning("%s added to ban list.", key_text(key))
    else:
        logger.warning("%d addresses added to ban list from %s.", len(fresh), source)
    return fresh
