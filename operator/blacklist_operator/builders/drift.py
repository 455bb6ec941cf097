"""Drift detection: whether a live object still holds every field of its built manifest.

The API server adds defaults and status, so "live contains desired" (not
equality) is the test; a field someone changed or removed fails it. It also
rewrites quantities in canonical form (``1024Mi`` → ``1Gi``), so the values of
resource maps (``requests``, ``limits``, a volume's ``capacity``) are compared
as amounts, not as text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blacklist_operator.builders.quantity import same_quantity

# Maps whose values are quantities: a container's or a claim's requests/limits, a PV's capacity.
QUANTITY_MAPS = frozenset({"requests", "limits", "capacity"})


def contains(live: Any, desired: Any, *, quantities: bool = False) -> bool:
    """Whether ``live`` holds every field and list item of ``desired`` with the same value.

    ``quantities``: ``desired`` is a quantity map, whose values are compared as amounts.
    """
    if quantities and isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and (same_quantity(live[key], value) or contains(live[key], value))
            for key, value in desired.items()
        )
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(live[key], value, quantities=key in QUANTITY_MAPS)
            for key, value in desired.items()
        )
    if isinstance(desired, Sequence) and not isinstance(desired, str):
        return (
            isinstance(live, Sequence)
            and not isinstance(live, str)
            and len(live) == len(desired)
            and all(contains(item, wanted) for item, wanted in zip(live, desired, strict=True))
        )
    return bool(live == desired or (live is not None and str(live) == str(desired)))
