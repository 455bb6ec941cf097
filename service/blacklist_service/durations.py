"""Ban durations (``BAN_DURATION``: ``30m``, ``24h``, ``7d``, ``1d12h``, seconds) and expiries.

A ban made at time ``t`` with duration ``D`` lasts until ``ceil(t + D)``, an
integer Unix time in seconds, the unit of the ban store and of the ban-list
ConfigMap lines (docs/CONTRACTS.md). No duration means for ever (``0``).
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime

from blacklist_contract.lines import FOREVER

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(?:\d+[smhd])+")
_PART = re.compile(r"(\d+)([smhd])")


def parse_duration(text: str) -> int | None:
    """Seconds of a duration written as ``1d12h`` or ``86400``; None if empty; ValueError if bad."""
    candidate = text.strip().lower()
    if not candidate:
        return None
    if candidate.isdigit():
        seconds = int(candidate)
    elif _DURATION.fullmatch(candidate):
        seconds = sum(int(n) * UNIT_SECONDS[unit] for n, unit in _PART.findall(candidate))
    else:
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h, 7d, 1d12h or 86400")
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def ban_until(duration: int | None, at: float | None = None) -> int:
    """When a ban made at ``at`` (default now) ends: Unix seconds, or ``0`` for ever."""
    if duration is None:
        return FOREVER
    return math.ceil((time.time() if at is None else at) + duration)


def ban_until_after(duration: int | None, hit: datetime) -> int:
    """When the ban of a hit recorded at ``hit`` ends."""
    return ban_until(duration, hit.timestamp())
