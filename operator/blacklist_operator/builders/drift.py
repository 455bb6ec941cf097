"""Drift detection: whether a live object still holds every field of its built manifest.

The API server adds defaults and status, so "live contains desired" (not
equality) is the test; a field someone changed or removed fails it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def contains(live: Any, desired: Any) -> bool:
    """Whether ``live`` holds every field and list item of ``desired`` with the same value."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        return (
            isinstance(live, Sequence)
            and not isinstance(live, str)
            and len(live) == len(desired)
            and all(contains(item, wanted) for item, wanted in zip(live, desired, strict=True))
        )
    return bool(live == desired or (live is not None and str(live) == str(desired)))
