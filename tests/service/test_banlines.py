"""The operator's head and snapshot parts applied to a replica's store, without a cluster.

The parts are encoded by the contract's own :func:`encode_part`, as the
operator writes them, and streamed into the store as the watcher does after
its ``GET`` of each part; the head goes through :func:`apply_head`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from blacklist_contract.lines import format_lines
from blacklist_contract.prefixes import Prefix, parse_address, parse_prefix
from blacklist_contract.wire import LIFTS_SEEN_ANNOTATION, Section, decode_part, encode_part
from blacklist_service.bans import store as store_module
from blacklist_service.bans.lines import parse_head
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.watcher import apply_head
from tests.clock import MovedClock


def prefix(text: str) -> Prefix:
    found = parse_prefix(text)
    assert found is not None
    return found


def banned(store: BanStore, address: str) -> bool:
    parsed = parse_address(address)
    assert parsed is not None
    return store.banned(*parsed)


def head(
    bans: list[tuple[Prefix, int]], snapshot: str = "0", parts: int = 0, lifts_seen: int = 0
) -> dict[str, Any]:
    """A head ConfigMap as the API returns it."""
    return {
        "metadata": {
            "name": "bls-banlist",
            "annotations": {LIFTS_SEEN_ANNOTATION: str(lifts_seen)},
        },
        "data": {
            "addresses": format_lines(bans),
            "snapshot": snapshot,
            "parts": str(parts),
            "count": str(len(bans)),
        },
    }


def install(store: BanStore, generation: str, parts: list[bytes], lifts_seen: int = 0) -> None:
    """Stream encoded parts into a new generation of the store, in order, as the watcher does."""
    writer = store.new_snapshot()
    for part in parts:
        for section in decode_part(part):
            writer.add(section)
    store.install(writer, generation, lifts_seen)


def part(*bans: tuple[str, int]) -> bytes:
    sections: dict[tuple[int, int], Section] = {}
    for text, expiry in bans:
        found = prefix(text)
        section = sections.setdefault(
            (found.version, found.length), Section.empty(found.version, found.length)
        )
        section.append(found, expiry)
    return encode_part(sections[key] for key in sorted(sections))


def test_a_head_gives_its_generation_parts_bans_and_lifts_seen() -> None:
    parsed = parse_head(head([(prefix("1.2.3.4"), 0)], snapshot="7", parts=2, lifts_seen=99))
    assert (parsed.snapshot, parsed.parts, parsed.lifts_seen) == ("7", 2, 99)
    assert parsed.bans == [(prefix("1.2.3.4"), 0)]
    broken = head([])
    broken["data"]["addresses"] = "1.2.3.4\nnot-an-address\n"
    broken["metadata"]["annotations"][LIFTS_SEEN_ANNOTATION] = "soon"
    parsed = parse_head(broken)
    assert parsed.bans == [(prefix("1.2.3.4"), 0)]
    assert parsed.bad_lines == ["not-an-address", f"{LIFTS_SEEN_ANNOTATION}: soon"]
    assert parse_head({"data": {"addresses": ""}}).snapshot == "0"  # no snapshot yet


def test_head_lines_ban_and_the_lifts_seen_rule_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BanStore(tmp_path, carry_own=True)
    expiry = int(time.time()) + 2
    listed = [(prefix("1.2.3.4"), 0), (prefix("2001:db8:1:2::/64"), expiry)]
    apply_head(store, parse_head(head(listed)), "test")
    assert banned(store, "1.2.3.4")
    assert banned(store, "2001:db8:1:2::99")
    # Lifted here by lift 10,000; a head written before the operator read it is stale.
    store.lift([(prefix("1.2.3.4"), 10_000, 10_000)])
    apply_head(store, parse_head(head(listed, lifts_seen=9_999)), "test")
    assert not banned(store, "1.2.3.4")
    apply_head(store, parse_head(head(listed, lifts_seen=10_000)), "test")
    assert banned(store, "1.2.3.4")
    # The expiry of a line holds: the ban ends then (the store's clock moved past it).
    monkeypatch.setattr(store_module, "time", MovedClock(expiry - time.time() + 0.05))
    assert not banned(store, "2001:db8:1:2::99")


def test_a_ban_the_operator_drops_from_its_list_ends(tmp_path: Path) -> None:
    store = BanStore(tmp_path, carry_own=True)
    apply_head(store, parse_head(head([(prefix("1.2.3.4"), 0), (prefix("5.6.7.8"), 0)])), "t")
    # A ledger row deleted by an admin: the operator's next list leaves it out.
    apply_head(store, parse_head(head([(prefix("5.6.7.8"), 0)])), "t")
    assert not banned(store, "1.2.3.4")
    assert banned(store, "5.6.7.8")


def test_an_operator_snapshot_replaces_its_bans_and_keeps_own_bans_and_newer_lifts(
    tmp_path: Path,
) -> None:
    store = BanStore(tmp_path, carry_own=True)
    apply_head(store, parse_head(head([(prefix("9.9.9.9"), 0)])), "t")
    store.ban([(prefix("10.0.0.1"), 0), (prefix("10.0.0.2"), 0)])  # own hits of this replica
    store.lift([(prefix("10.1.0.1"), 20_000, 20_000)])
    store.lift([(prefix("10.1.0.2"), 5_000, 5_000)])
    install(
        store,
        "g1",
        [part(("10.0.0.2", 0), ("10.1.0.1", 0)), part(("10.1.0.2", 0), ("2001:db8::/64", 0))],
        lifts_seen=10_000,
    )
    assert store.operator_generation() == "g1"
    assert not banned(store, "9.9.9.9")  # listed before, not in the operator's new list
    assert banned(store, "10.0.0.1")  # own, not listed yet: still enforced
    assert banned(store, "10.0.0.2")  # own, and now in the list
    assert not banned(store, "10.1.0.1")  # lifted after the snapshot's lifts-seen
    assert banned(store, "10.1.0.2")  # lifted before it: the operator still bans it
    assert banned(store, "2001:db8::1234")
    # The next snapshot holds neither own ban: the one it listed once is gone, the other stays.
    apply_head(store, parse_head(head([(prefix("10.0.0.1"), 0)], snapshot="g1", parts=2)), "t")
    install(store, "g2", [part(("2001:db8::/64", 0))], lifts_seen=10_000)
    assert not banned(store, "10.0.0.1")
    assert not banned(store, "10.0.0.2")
    assert banned(store, "2001:db8::1234")
    assert store.counts() == (1, 1)


def test_a_head_read_against_the_one_applied_before_gives_only_what_changed(
    tmp_path: Path,
) -> None:
    store = BanStore(tmp_path, carry_own=True)
    first = parse_head(head([(prefix("1.1.1.1"), 0), (prefix("2.2.2.2"), 0)]))
    apply_head(store, first, "t")
    expiry = int(time.time()) + 600
    second = parse_head(
        head([(prefix("2.2.2.2"), expiry), (prefix("3.3.3.0/24"), 0)]), previous=first
    )
    assert second.bans == [(prefix("2.2.2.2"), expiry), (prefix("3.3.3.0/24"), 0)]
    assert second.dropped == [prefix("1.1.1.1"), prefix("2.2.2.2")]
    apply_head(store, second, "t")
    assert not banned(store, "1.1.1.1")
    assert store.value(prefix("2.2.2.2")) == expiry  # a new expiry, not a removal
    assert banned(store, "3.3.3.3")
    # Another lifts-seen (or generation): the head is read whole again.
    third = parse_head(head([(prefix("2.2.2.2"), expiry)], lifts_seen=5), previous=second)
    assert third.dropped is None
    apply_head(store, third, "t")
    assert not banned(store, "3.3.3.3")
    assert banned(store, "2.2.2.2")
