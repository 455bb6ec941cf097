"""Reading one field of a raw spec: its type, range and format checked, its CRD default applied.

Each reader takes the parent mapping, the key and the field's path (for the
:class:`SpecError` message) and returns the typed value; ``model`` composes
them into the typed spec.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
SQL_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
DURATION = re.compile(r"^([0-9]{1,7}[smhd])+$")
DURATION_PART = re.compile(r"([0-9]+)([smhd])")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_BAN_DURATION_SECONDS = 3650 * 86400


class SpecError(ValueError):
    """A spec the operator cannot act on; ``field`` names the offending path."""

    def __init__(self, field_path: str, message: str) -> None:
        super().__init__(f"{field_path}: {message}")
        self.field_path = field_path


def mapping(parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
    """An object field; ``{}`` when absent."""
    value = parent.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    return value


def string(parent: Mapping[str, Any], key: str, path: str, default: str) -> str:
    """A non-empty string without spaces; ``default`` when absent."""
    value = parent.get(key, default)
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise SpecError(path, "must be a non-empty string without spaces")
    return value


def optional_string(parent: Mapping[str, Any], key: str, path: str) -> str | None:
    """A non-empty string without spaces, or ``None`` when absent."""
    if parent.get(key) is None:
        return None
    return string(parent, key, path, "")


def choice(parent: Mapping[str, Any], key: str, path: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``; the second one when absent (the CRD's default)."""
    value = parent.get(key, choices[1])
    if value not in choices:
        raise SpecError(path, f"must be one of {', '.join(choices)}")
    return str(value)


def boolean(parent: Mapping[str, Any], key: str, path: str) -> bool:
    """A boolean; false when absent."""
    value = parent.get(key, False)
    if not isinstance(value, bool):
        raise SpecError(path, "must be true or false")
    return value


def integer(
    parent: Mapping[str, Any], key: str, path: str, default: int, low: int, high: int
) -> int:
    """An integer from ``low`` to ``high``; ``default`` when absent."""
    value = parent.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(path, f"must be an integer from {low} to {high}")
    return value


def optional_integer(
    parent: Mapping[str, Any], key: str, path: str, low: int, high: int
) -> int | None:
    """An integer from ``low`` to ``high``, or ``None`` when absent."""
    if parent.get(key) is None:
        return None
    return integer(parent, key, path, low, low, high)


def parse_duration(text: str) -> int:
    """Seconds in a duration such as ``30m``, ``24h``, ``7d`` or ``1d12h`` (ValueError if not)."""
    if not DURATION.match(text):
        raise ValueError(f"{text!r} is not a duration such as 30m, 24h or 7d")
    return sum(int(n) * DURATION_UNITS[unit] for n, unit in DURATION_PART.findall(text))


def duration(parent: Mapping[str, Any], key: str, path: str) -> int | None:
    """A ban duration in seconds (1s to 3650d), or ``None`` when absent."""
    value = parent.get(key)
    if value is None:
        return None
    try:
        seconds = parse_duration(str(value))
    except ValueError as error:
        raise SpecError(path, str(error)) from None
    if not 1 <= seconds <= MAX_BAN_DURATION_SECONDS:
        raise SpecError(path, "must be from 1s to 3650d")
    return seconds


def networks(parent: Mapping[str, Any], key: str, path: str) -> tuple[IPNetwork, ...]:
    """A list of addresses or CIDRs as networks; empty when absent."""
    values = parent.get(key) or []
    if not isinstance(values, list):
        raise SpecError(path, "must be a list of addresses or CIDRs")
    parsed: list[IPNetwork] = []
    for index, value in enumerate(values):
        try:
            # strict=False: "10.0.0.1/8" means the network 10.0.0.0/8, as the CEL rule allows.
            parsed.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError as error:
            raise SpecError(f"{path}[{index}]", f"is not an address or CIDR: {error}") from None
    return tuple(parsed)


def resources(
    parent: Mapping[str, Any], path: str, default: Mapping[str, Mapping[str, str]]
) -> Mapping[str, Mapping[str, str]]:
    """Container ``requests``/``limits`` of cpu and memory; ``default`` when absent."""
    value = parent.get("resources")
    if value is None:
        return default
    if not isinstance(value, Mapping):
        raise SpecError(path, "must be an object")
    parsed: dict[str, dict[str, str]] = {}
    for group in ("requests", "limits"):
        quantities = value.get(group) or {}
        if not isinstance(quantities, Mapping):
            raise SpecError(f"{path}.{group}", "must be an object")
        for resource, quantity in quantities.items():
            if resource not in ("cpu", "memory") or not QUANTITY.match(str(quantity)):
                raise SpecError(f"{path}.{group}.{resource}", "must be a cpu or memory quantity")
            parsed.setdefault(group, {})[str(resource)] = str(quantity)
    return parsed
