"""The ban list's contract: what the operator writes, the service reads back exactly.

Every shape of address, prefix length and expiry survives both carriers: a
text line of the head and a binary part of the snapshot.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blacklist_contract import lines, prefixes, wire
from blacklist_contract.prefixes import IPV4, IPV6, Prefix

ipv4_prefixes = st.builds(
    lambda number, length: prefixes.covering(IPV4, number, length),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
ipv6_prefixes = st.builds(
    lambda number, length: prefixes.covering(IPV6, number, length),
    st.integers(0, 2**128 - 1).filter(lambda n: n >> 32 != 0xFFFF),
    st.integers(0, 128),
)
expiries = st.one_of(st.just(lines.FOREVER), st.integers(1, lines.MAX_EXPIRY))
bans = st.tuples(st.one_of(ipv4_prefixes, ipv6_prefixes), expiries)


@given(bans)
def test_a_line_reads_back_as_written(ban: lines.Ban) -> None:
    assert lines.parse_line(lines.format_line(*ban)) == ban


@given(st.lists(bans, max_size=200))
def test_a_part_reads_back_as_written(written: list[lines.Ban]) -> None:
    unique = dict(written)
    ordered = sorted(unique.items(), key=lambda ban: (ban[0].version, ban[0].length, ban[0]))
    sections: dict[tuple[int, int], wire.Section] = {}
    for prefix, expiry in ordered:
        key = (prefix.version, prefix.length)
        sections.setdefault(key, wire.Section.empty(*key)).append(prefix, expiry)
    decoded = wire.decode_part(wire.encode_part(sections.values()))
    assert [ban for section in decoded for ban in section.bans()] == ordered


@given(st.integers(0, 2**32 - 1))
def test_an_ipv4_mapped_address_is_its_ipv4_address(number: int) -> None:
    mapped = str(ipaddress.IPv6Address(0xFFFF << 32 | number))
    assert prefixes.parse_address(mapped) == (IPV4, number)
    assert prefixes.covering_prefix(mapped, 24, 64) == prefixes.covering(IPV4, number, 24)


def test_a_hit_bans_its_covering_prefix() -> None:
    first = prefixes.covering_prefix("2001:db8:1:2:aaaa::1", 32, 64)
    second = prefixes.covering_prefix("2001:db8:1:2:ffff::9", 32, 64)
    assert first == second == prefixes.parse_prefix("2001:db8:1:2::/64")
    assert first is not None
    assert lines.format_line(first, 0) == "2001:db8:1:2::/64"
    assert prefixes.covering_prefix("203.0.113.9", 24, 64) == Prefix(IPV4, 0xCB007100, 24)
    assert prefixes.holds(first, IPV6, int(ipaddress.IPv6Address("2001:db8:1:2::77")))
    assert not prefixes.holds(first, IPV6, int(ipaddress.IPv6Address("2001:db8:1:3::77")))


@pytest.mark.parametrize(
    "line",
    ["", "1.2.3.4 0", "1.2.3.4/33", "2001:db8::/129", "1.2.3.4 x", "1.2.3.4 1 2", "nope",
     "1.2.3.4 99999999999", "::ffff:1.2.3.4/95", "1.2.3.4/-1", "1.2.3.4/٣"],
)  # fmt: skip
def test_a_line_that_is_no_ban_is_refused(line: str) -> None:
    assert lines.parse_line(line) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"not zlib", __import__("zlib").compress(b"XXXX"),
     __import__("zlib").compress(wire.MAGIC + b"\x04\x20\x05\x00\x00\x00" + b"\x00" * 7)],
)  # fmt: skip
def test_a_part_that_is_no_part_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="ban-list part"):
        wire.decode_part(data)


def test_part_names_are_bounded() -> None:
    assert wire.head_name("demo") == "demo-banlist"
    assert wire.part_name("demo", 1) == "demo-banlist-1"
    with pytest.raises(ValueError, match="outside"):
        wire.part_name("demo", wire.MAX_PARTS)
