"""Kubernetes resource quantities (``1Gi``, ``500m``, ``1e3``) parsed to exact values.

The API server stores a quantity in canonical form (``1024Mi`` reads back as
``1Gi``, ``0.5`` as ``500m``), so comparing desired and live quantities as text
would see drift where there is none. :func:`parse_quantity` follows the grammar
of ``k8s.io/apimachinery/pkg/api/resource``; values are ``Decimal`` so that
nothing is lost to floating point.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)|[eE](?P<exponent>[+-]?[0-9]+))?$"
)
_SUFFIXES = {
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}


def parse_quantity(text: str | int | float) -> Decimal:
    """The exact value of a quantity; ``ValueError`` for anything that is not one."""
    match = _QUANTITY.match(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a quantity such as 1Gi, 500m or 1e3")
    try:
        number = Decimal(match["number"])
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a quantity such as 1Gi, 500m or 1e3") from None
    if match["suffix"] is not None:
        return number * _SUFFIXES[match["suffix"]]
    if match["exponent"] is not None:
        return number.scaleb(int(match["exponent"]))
    return number


def same_quantity(first: object, second: object) -> bool:
    """Whether two quantities are the same amount (False when either is no quantity)."""
    if not isinstance(first, str | int | float) or not isinstance(second, str | int | float):
        return False
    try:
        return parse_quantity(first) == parse_quantity(second)
    except ValueError:
        return False
