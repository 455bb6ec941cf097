"""Strict parsing of the ``n`` parameter and the square it answers (pure, no Flask)."""

from __future__ import annotations

import math
import re

# A plain decimal number: optional sign, digits with an optional fraction (or a
# fraction alone), optional exponent. float() accepts more (nan, inf, 1_0,
# surrounding spaces), which the interface must refuse.
# ASCII digits only: float() also takes other scripts' digits.
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
MAX_LENGTH = 200


class BadNumberError(ValueError):
    """``n`` is missing, malformed, or its square is not a finite float."""


def square(raw: str | None) -> float:
    """``float(raw) * float(raw)``, or :class:`BadNumberError` with a one-line reason."""
    if raw is None:
        raise BadNumberError("missing parameter n: call /?n=<decimal number>")
    if raw == "":
        raise BadNumberError("parameter n is empty: expected a decimal number")
    if len(raw) > MAX_LENGTH or not DECIMAL.fullmatch(raw):
        # ascii() keeps the message on one line whatever the client sent.
        shown = ascii(raw[:40]) + ("..." if len(raw) > 40 else "")
        raise BadNumberError(f"parameter n={shown} is not a decimal number")
    number = float(raw)
    if not math.isfinite(number):
        raise BadNumberError(f"parameter n={raw} is too large to be a finite float")
    result = number * number
    if not math.isfinite(result):
        raise BadNumberError(f"the square of n={raw} is too large to be a finite float")
    return result
