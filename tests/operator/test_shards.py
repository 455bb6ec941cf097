"""The sharded ban list: every shard under budget, stable assignment, a stated limit."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from blacklist_operator.banlist.ledger import normalise
from blacklist_operator.banlist.shards import SHARD_BUDGET_BYTES, ShardedBanList
from blacklist_operator.banlist.sync import allowed, allowlist_key

addresses = st.ip_addresses().map(str)


def ipv4(count: int, start: int = 0x0A000000) -> list[str]:
    return [str(ipaddress.IPv4Address(start + index)) for index in range(count)]


@settings(max_examples=50, deadline=None)
@given(st.lists(addresses, max_size=300), st.integers(min_value=60, max_value=400))
def test_every_address_is_in_one_shard_and_shards_fit(items: list[str], budget: int) -> None:
    banlist = ShardedBanList(budget=budget, max_shards=16)
    banlist.add(items)
    texts = banlist.texts()
    assert all(len(text.encode()) <= budget for text in texts)
    lines = [line for text in texts for line in text.splitlines()]
    assert len(lines) == len(set(lines)) == len(banlist)
    assert len(banlist) + banlist.overflow == len(set(items))
    for text in texts:
        assert text.splitlines() == sorted(text.splitlines())


def test_adding_one_address_changes_one_shard() -> None:
    banlist = ShardedBanList.from_addresses(ipv4(100_000))
    assert banlist.shard_count == 2
    assert len(banlist.add(["192.0.2.1"])) == 1
    assert banlist.add(["192.0.2.1"]) == set()


def test_100k_addresses_fit_under_the_configmap_limit() -> None:
    banlist = ShardedBanList()
    banlist.add(ipv4(100_000))
    assert len(banlist) == 100_000
    assert banlist.overflow == 0
    assert all(len(text.encode()) <= SHARD_BUDGET_BYTES for text in banlist.texts())
    assert 1 < banlist.shard_count <= 3


def test_beyond_16_shards_the_overflow_is_counted_not_written() -> None:
    banlist = ShardedBanList(budget=1000, max_shards=2)
    banlist.add(ipv4(500))
    assert banlist.shard_count == 2
    assert banlist.overflow > 0
    assert len(banlist) + banlist.overflow == 500
    assert all(len(text) <= 1000 for text in banlist.texts())


def test_reloading_the_texts_gives_the_same_list() -> None:
    banlist = ShardedBanList.from_addresses(ipv4(5000))
    again = ShardedBanList.from_addresses(
        line for text in banlist.texts() for line in text.splitlines()
    )
    assert again.texts() == banlist.texts()


def test_allowlist_and_normalisation() -> None:
    networks = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
    assert allowed("10.1.2.3", networks)
    assert allowed("::1", networks)
    assert not allowed("11.1.2.3", networks)
    assert normalise("::ffff:10.0.0.1") == "10.0.0.1"
    assert normalise(" 2001:DB8::1 ") == "2001:db8::1"
    assert normalise("garbage") is None
    assert allowlist_key(networks) == allowlist_key(tuple(reversed(networks)))
