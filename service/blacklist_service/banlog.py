"""Adding bans with the log line the original deployment wrote for each."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from blacklist_service.addresses import key_text
from blacklist_service.banstore import FOREVER, BanStore

logger = logging.getLogger("blacklist_service.bans")
# One warning per address, as the original did, up to this many per batch; a
# bulk load (a restart with a million bans) gets one summary line instead.
DETAILED_LIMIT = 100


def log_added(fresh: list[int], source: str) -> None:
    """Warn about each newly banned address (or sum up a bulk load)."""
    if len(fresh) <= DETAILED_LIMIT:
        for key in fresh:
            logger.warning("%s added to ban list.", key_text(key))
    else:
        logger.warning("%d addresses added to ban list from %s.", len(fresh), source)


def log_bans(bans: BanStore, keys: Iterable[int], source: str, until: int = FOREVER) -> list[int]:
    """Ban ``keys`` until ``until`` (``0``: for ever); warn about each new one; return those."""
    fresh = bans.add(keys, until)
    log_added(fresh, source)
    return fresh
