"""The packed ban list: columns and head agree with a plain dict; in place; oldest evicted."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist_contract.prefixes import IPV4, IPV6, Prefix, covering, parse_prefix
from blacklist_contract.wire import decode_part
from blacklist_operator.banlist.core.layout import encode_parts
from blacklist_operator.banlist.core.packed import PackedBanList
from blacklist_operator.banlist.core.rebuild import Builder

v4 = st.builds(
    lambda n, length: covering(IPV4, n, length),
    st.integers(0, 2**32 - 1),
    st.sampled_from([32, 32, 24]),
)
v6 = st.builds(
    lambda n, length: covering(IPV6, n, length),
    st.integers(0, 2**128 - 1),
    st.sampled_from([64, 64, 128, 48, 96]),
)
prefixes = st.one_of(v4, v6)
stamps = st.integers(1, 2**32 - 1)


def prefix_of(text: str) -> Prefix:
    prefix = parse_prefix(text)
    assert prefix is not None
    return prefix


def wire_bans(banlist: PackedBanList) -> dict[Prefix, int]:
    """What the snapshot parts and the head say together."""
    bans: dict[Prefix, int] = {}
    for data in encode_parts(banlist):
        for section in decode_part(data):
            bans.update(section.bans())
    bans.update(banlist.head_bans())
    return bans


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(prefixes, stamps), max_size=200),
    st.lists(st.tuples(prefixes, stamps), max_size=200),
    st.integers(0, 50),
    st.booleans(),
)
def test_adds_merges_and_removes_agree_with_a_dict(
    first: list[tuple[Prefix, int]],
    second: list[tuple[Prefix, int]],
    removals: int,
    expiring: bool,
) -> None:
    banlist = PackedBanList(expiring)
    model: dict[Prefix, int] = {}
    for prefix, stamp in first:
        banlist.add(prefix, stamp)
        model[prefix] = max(model.get(prefix, 0), stamp)
    banlist.merge()
    assert banlist.head == {}
    for prefix, stamp in second:
        banlist.add(prefix, stamp)
        model[prefix] = max(model.get(prefix, 0), stamp)
    for prefix in list(model)[:removals]:
        assert banlist.remove(prefix)[0]
        del model[prefix]
    assert len(banlist) == len(model)
    for prefix, stamp in model.items():
        assert banlist.stamp(prefix) == stamp
    assert banlist.head_bytes == len(banlist.head_text())
    expected = {prefix: stamp if expiring else 0 for prefix, stamp in model.items()}
    assert wire_bans(banlist) == expected
    banlist.merge()
    assert wire_bans(banlist) == expected
    for columns in banlist.sections.values():
        keys = [
            (columns.keys[i], columns.low[i] if columns.low else 0) for i in range(len(columns))
        ]
        assert keys == sorted(set(keys))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(prefixes, stamps), max_size=400), st.booleans())
def test_a_rebuild_equals_adding_one_by_one(bans: list[tuple[Prefix, int]], expiring: bool) -> None:
    builder = Builder(expiring)
    added = PackedBanList(expiring)
    for prefix, stamp in bans:
        builder.add(prefix, stamp)
        added.add(prefix, stamp)
    built = builder.finish()
    added.merge()
    assert built.digest() == added.digest()
    assert wire_bans(built) == wire_bans(added)


def test_a_crowded_bucket_is_sorted_by_its_next_bytes() -> None:
    # 100,000 addresses in one /8: more than one bucket sorts as objects at once.
    builder = Builder(expiring=False)
    numbers = [(0x0A000000 + (index * 7919) % (1 << 24)) for index in range(100_000)]
    for stamp, number in enumerate(numbers):
        builder.add(Prefix(IPV4, number, 32), stamp + 1)
    built = builder.finish()
    (columns,) = built.sections.values()
    assert list(columns.keys) == sorted(set(numbers))


def test_merging_inserts_in_place_and_keeps_the_newest_stamp() -> None:
    banlist = PackedBanList(expiring=True)
    for number in range(0, 1000, 2):
        banlist.add(Prefix(IPV4, number, 32), 100)
    banlist.merge()
    keys = banlist.sections[(IPV4, 32)].keys
    for number in range(1, 1000, 2):
        banlist.add(Prefix(IPV4, number, 32), 200)
    assert banlist.add(Prefix(IPV4, 4, 32), 300)  # a later expiry: a head line again
    assert not banlist.add(Prefix(IPV4, 6, 32), 50)  # an earlier one changes nothing
    assert len(banlist) == 1000
    banlist.merge()
    assert banlist.sections[(IPV4, 32)].keys is keys  # the same array, grown in place
    assert list(keys) == list(range(1000))
    assert banlist.stamp(Prefix(IPV4, 4, 32)) == 300
    assert banlist.stamp(Prefix(IPV4, 6, 32)) == 100


def test_expired_bans_leave_at_a_merge_with_the_time() -> None:
    banlist = PackedBanList(expiring=True)
    banlist.add(Prefix(IPV4, 1, 32), 1000)
    banlist.add(Prefix(IPV4, 2, 32), 2000)
    banlist.merge()
    banlist.add(Prefix(IPV4, 3, 32), 1500)
    assert banlist.drop_expired_head(1500)
    assert len(banlist) == 2  # the sections wait for a merge
    banlist.merge(1500)
    assert [prefix.network for prefix, _ in wire_bans(banlist).items()] == [2]
    assert banlist.oldest_stamp() == 2000


def test_at_capacity_the_oldest_are_evicted_never_the_newest() -> None:
    banlist = PackedBanList(expiring=False)
    for number in range(100):
        banlist.add(Prefix(IPV4, 1000 - number, 32), 10_000 + number)  # newer as it goes
    banlist.merge()
    banlist.add(Prefix(IPV6, 0x20010DB8 << 96, 64), 20_000)  # the newest of all, in the head
    assert banlist.evict(90) == 11
    assert len(banlist) == 90
    assert Prefix(IPV6, 0x20010DB8 << 96, 64) in banlist
    kept = sorted(banlist.stamp(Prefix(IPV4, 1000 - n, 32)) or 0 for n in range(100))
    assert kept[:11] == [0] * 11  # the eleven oldest are gone
    assert kept[11:] == list(range(10_011, 10_100))
    assert banlist.evict(90) == 0


def test_ties_at_the_threshold_evict_only_the_excess() -> None:
    banlist = PackedBanList(expiring=False)
    for number in range(10):
        banlist.add(Prefix(IPV4, number, 32), 5)
    assert banlist.evict(7) == 3
    assert len(banlist) == 7


def test_a_range_finds_the_bans_inside_it() -> None:
    banlist = PackedBanList(expiring=False)
    inside = [prefix_of(text) for text in ("198.51.100.7", "198.51.100.0/28", "198.51.100.255")]
    outside = [prefix_of(text) for text in ("198.51.101.1", "198.51.0.0/16", "2001:db8::/64")]
    for prefix in [*inside, *outside]:
        banlist.add(prefix, 1)
    banlist.merge()
    banlist.add(Prefix(IPV4, int(ipaddress.IPv4Address("198.51.100.9")), 32), 2)  # in the head
    found = banlist.within(Prefix(IPV4, int(ipaddress.IPv4Address("198.51.100.0")), 24))
    assert sorted(found) == sorted(
        [*inside, Prefix(IPV4, int(ipaddress.IPv4Address("198.51.100.9")), 32)]
    )
    wide = banlist.within(Prefix(IPV6, 0x20010DB8 << 96, 32))
    assert wide == [outside[2]]


def test_a_rebuild_keeps_the_heads_lines_in_the_head_and_compares_equal() -> None:
    written = PackedBanList(expiring=True)
    builder = Builder(expiring=True)
    for number in range(100):
        written.add(Prefix(IPV4, number, 32), 5000 + number)
        builder.add(Prefix(IPV4, number, 32), 5000 + number)
    written.merge()
    for number in range(100, 110):  # the head: new bans since the last compaction
        written.add(Prefix(IPV4, number, 32), 9000)
        builder.add(Prefix(IPV4, number, 32), 9000)
    rebuilt = builder.finish()
    rebuilt.hold_in_head(dict(written.head))
    assert rebuilt.digest() == written.digest()
    assert rebuilt.head_text() == written.head_text()
    assert len(rebuilt) == 110
    builder = Builder(expiring=True)
    for number in range(109):  # one row gone from the ledger
        builder.add(Prefix(IPV4, number, 32), 5000 + number if number < 100 else 9000)
    shorter = builder.finish()
    shorter.hold_in_head(dict(written.head))
    assert shorter.digest() != written.digest()
