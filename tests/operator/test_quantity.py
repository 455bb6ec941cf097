"""Kubernetes quantities parsed to exact values, so 1024Mi and 1Gi are one amount."""

from __future__ import annotations

from decimal import Decimal

import pytest

from blacklist_operator.builders.quantity import parse_quantity, same_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1Gi", Decimal(2**30)),
        ("1024Mi", Decimal(2**30)),
        ("0.5", Decimal("0.5")),
        ("500m", Decimal("0.5")),
        ("1e3", Decimal(1000)),
        ("1E3", Decimal(1000)),
        ("1k", Decimal(1000)),
        ("1.5M", Decimal(1_500_000)),
        ("100n", Decimal("0.0000001")),
        ("250u", Decimal("0.00025")),
        (".5", Decimal("0.5")),
        ("+2", Decimal(2)),
        ("-1", Decimal(-1)),
        ("7", Decimal(7)),
        (64, Decimal(64)),
    ],
)
def test_parse_quantity(text: str | int, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "1 Gi", "1gi", "1.2.3", "1e", "abc", "1Ki1", "0x10"])
def test_parse_quantity_rejects_what_is_no_quantity(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_same_quantity() -> None:
    assert same_quantity("1024Mi", "1Gi")
    assert same_quantity("0.5", "500m")
    assert same_quantity("1e3", "1k")
    assert not same_quantity("1G", "1Gi")
    assert not same_quantity("1Gi", "nonsense")
