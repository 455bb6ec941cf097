"""The sharded ban list: every shard under budget, stable assignment, expiries, a stated limit."""

from __future__ import annotations

import ipaddress
import subprocess
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist_operator.banlist.addresses import address_key, key_text, parse_text
from blacklist_operator.banlist.filters import allowed, filter_key, key_ranges
from blacklist_operator.banlist.shards import SHARD_BUDGET_BYTES, ShardedBanList

addresses = st.ip_addresses().map(str)
expiries = st.sampled_from([0, 0, 1_767_225_600, 1_767_229_200])


def ipv4(count: int, start: int = 0x0A000000) -> list[tuple[int, int]]:
    return [(start + index, 0) for index in range(count)]


def keys(*texts: str) -> list[int]:
    found = [address_key(text) for text in texts]
    assert None not in found
    return [key for key in found if key is not None]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(addresses, expiries), max_size=300), st.integers(60, 400))
def test_every_ban_is_in_one_shard_and_shards_fit(
    items: list[tuple[str, int]], budget: int
) -> None:
    banlist = ShardedBanList(budget=budget, max_shards=16)
    banlist.add((address_key(text) or 0, expiry) for text, expiry in items)
    texts = banlist.texts()
    assert all(len(text.encode()) <= budget for text in texts)
    lines = [line for text in texts for line in text.splitlines()]
    assert len(lines) == len({line.split()[0] for line in lines}) == len(banlist)
    distinct = {address_key(text) for text, _ in items}
    assert len(banlist) + banlist.overflow == len(distinct)
    for key, expiry in parse_text("".join(texts)):
        # Never (0) wins over a time, and the later of two times wins.
        given_expiries = [e for text, e in items if address_key(text) == key]
        assert expiry == (0 if 0 in given_expiries else max(given_expiries))


def test_lines_are_canonical_text_with_the_expiry() -> None:
    banlist = ShardedBanList()
    banlist.add([(keys("::ffff:192.0.2.1")[0], 0), (keys("2001:DB8::1")[0], 1_767_225_600)])
    assert banlist.texts() == ["192.0.2.1\n2001:db8::1 1767225600\n"]
    assert key_text(keys("::ffff:192.0.2.1")[0]) == "192.0.2.1"
    assert list(parse_text("192.0.2.1\n2001:db8::1 1767225600\ngarbage\n10.0.0.1 soon\n")) == [
        (keys("192.0.2.1")[0], 0),
        (keys("2001:db8::1")[0], 1_767_225_600),
    ]


def test_adding_one_address_changes_one_shard_and_removing_it_too() -> None:
    banlist = ShardedBanList.from_bans(ipv4(100_000))
    assert banlist.shard_count == 2
    key = keys("192.0.2.1")[0]
    assert len(banlist.add([(key, 0)])) == 1
    assert banlist.add([(key, 0)]) == set()
    assert key in banlist
    assert len(banlist.remove([key])) == 1
    assert key not in banlist
    assert len(banlist) == 100_000


def test_expired_bans_are_found_and_a_later_hit_extends_a_ban() -> None:
    banlist = ShardedBanList()
    early, late = keys("192.0.2.1", "192.0.2.2")
    banlist.add([(early, 100), (late, 200)])
    banlist.add([(early, 150)])
    assert banlist.expiry(early) == 150
    assert banlist.expired(160) == [early]


def test_100k_addresses_fit_under_the_configmap_limit() -> None:
    banlist = ShardedBanList()
    banlist.add(ipv4(100_000))
    assert len(banlist) == 100_000
    assert banlist.overflow == 0
    assert all(len(text.encode()) <= SHARD_BUDGET_BYTES for text in banlist.texts())
    assert 1 < banlist.shard_count <= 3


def test_beyond_16_shards_the_overflow_is_counted_once_per_address() -> None:
    banlist = ShardedBanList(budget=1000, max_shards=2)
    banlist.add(ipv4(500))
    assert banlist.shard_count == 2
    overflow = banlist.overflow
    assert overflow > 0
    assert len(banlist) + overflow == 500
    assert all(len(text) <= 1000 for text in banlist.texts())
    # The same addresses again (a re-read, a second hit) are not counted twice.
    banlist.add(ipv4(500))
    assert banlist.overflow == overflow


def test_reloading_the_texts_gives_the_same_list() -> None:
    banlist = ShardedBanList.from_bans([*ipv4(5000), (keys("2001:db8::5")[0], 1_767_225_600)])
    again = ShardedBanList.from_texts(banlist.texts())
    assert again.texts() == banlist.texts()


def test_a_million_bans_take_little_memory() -> None:
    script = (
        "import resource\n"
        "from blacklist_operator.banlist.shards import ShardedBanList\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "banlist = ShardedBanList.from_bans((0x0A000000 + i, 0) for i in range(1_000_000))\n"
        "again = ShardedBanList.from_bans(banlist.bans())\n"
        "assert len(again) == 1_000_000 and again.overflow == 0\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    grown_kib = int(subprocess.check_output([sys.executable, "-c", script], text=True))
    # Two lists of a million bans (a rebuild next to the old one) and the building.
    assert grown_kib < 80 * 1024


def test_allowlist_and_normalisation() -> None:
    networks = (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("::ffff:192.0.2.0/120"),
    )
    ranges = key_ranges(networks)
    assert allowed(keys("10.1.2.3")[0], ranges)
    assert allowed(keys("::1")[0], ranges)
    # An IPv4-mapped IPv6 CIDR covers the IPv4 addresses, as in the service.
    assert allowed(keys("192.0.2.9")[0], ranges)
    assert not allowed(keys("11.1.2.3")[0], ranges)
    assert address_key("::ffff:10.0.0.1") == address_key("10.0.0.1")
    assert key_text(keys(" 2001:DB8::1 ")[0]) == "2001:db8::1"
    assert address_key("garbage") is None
    assert filter_key(networks) == filter_key(tuple(reversed(networks)))
    assert filter_key(networks, 3600) != filter_key(networks)
