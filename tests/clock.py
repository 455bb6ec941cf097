"""A module's clock moved forward instead of waiting, for expiries in the unit tier."""

from __future__ import annotations

import time
from typing import Any


class MovedClock:
    """The ``time`` module as one module sees it, with ``time()`` ``seconds`` ahead.

    Set as that module's ``time`` (``monkeypatch.setattr(module, "time", ...)``): what it
    decides from ``time.time()`` is what it would decide after waiting ``seconds``.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def time(self) -> float:
        """The wall clock, ``seconds`` ahead."""
        return time.time() + self.seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
