"""When the ban list compacts, how fast the head may be rewritten, how the snapshot splits."""

from __future__ import annotations

import random

from blacklist_contract.prefixes import IPV4, IPV6, Prefix
from blacklist_contract.wire import decode_part
from blacklist_operator.banlist.core.filters import (
    ban_prefix,
    filter_key,
    lifted_ban,
    overlaps,
    stamp_of,
)
from blacklist_operator.banlist.core.layout import (
    EXPIRED_COMPACT_SECONDS,
    HEAD_MAX_BYTES,
    HEAD_SHARE_MIN_BYTES,
    HEAD_WRITE_RATE,
    LIFTED_COMPACT_SECONDS,
    PART_MAX_BYTES,
    Pending,
    SnapshotTooLargeError,
    Written,
    compaction_delay,
    compaction_reason,
    encode_parts,
    head_write_delay,
)
from blacklist_operator.banlist.core.packed import PackedBanList
from blacklist_operator.banlist.core.rebuild import Builder
from blacklist_operator.model.resource import parse_spec

NOW = 1000.0
AT_REST = Written(
    head_bytes=0,
    head_count=0,
    snapshot_count=1_000_000,
    compacted_at=NOW - 60,
    head_written_at=NOW - 60,
    last_head_bytes=0,
)


def pending(**changes: object) -> Pending:
    values: dict[str, object] = {
        "head_bytes": 40,
        "head_count": 2,
        "head_changed": True,
        "snapshot_changed": False,
        "lifted": False,
        "expired": False,
        "over_capacity": False,
    }
    values.update(changes)
    return Pending(**values)  # type: ignore[arg-type]


def test_a_lone_new_ban_at_rest_is_a_head_write_now() -> None:
    assert compaction_reason(AT_REST, pending(), NOW) is None
    assert head_write_delay(AT_REST, NOW) == 0


def test_a_full_head_a_rescan_and_capacity_compact() -> None:
    assert compaction_reason(AT_REST, pending(head_bytes=HEAD_MAX_BYTES + 1), NOW) == "head full"
    assert compaction_reason(AT_REST, pending(snapshot_changed=True), NOW) == "changed"
    assert compaction_reason(AT_REST, pending(over_capacity=True), NOW) == "capacity"


def test_a_head_that_holds_most_of_the_list_compacts_once_it_has_some_size() -> None:
    small = Written(0, 0, 100, NOW - 60, NOW - 60, 0)
    assert compaction_reason(small, pending(head_bytes=1000, head_count=101), NOW) is None
    many = pending(head_bytes=HEAD_SHARE_MIN_BYTES, head_count=2000)
    assert compaction_reason(small, many, NOW) == "head share"
    assert compaction_reason(AT_REST, many, NOW) is None  # a large snapshot: the head is small


def test_lifts_from_the_parts_compact_at_most_once_per_interval() -> None:
    lifted = pending(lifted=True)
    assert compaction_reason(AT_REST, lifted, NOW) == "lifted"
    just = Written(0, 0, 10, NOW - 0.5, NOW - 0.5, 0)
    assert compaction_reason(just, lifted, NOW) is None
    assert compaction_delay(just, lifted, NOW) == LIFTED_COMPACT_SECONDS - 0.5
    assert compaction_delay(just, pending(), NOW) is None


def test_expired_bans_in_the_parts_wait_for_the_expiry_interval() -> None:
    expired = pending(expired=True)
    recent = Written(0, 0, 10, NOW - 10, NOW - 10, 0)
    assert compaction_reason(recent, expired, NOW) is None
    old = Written(0, 0, 10, NOW - EXPIRED_COMPACT_SECONDS, NOW - 1, 0)
    assert compaction_reason(old, expired, NOW) == "expired"


def test_head_writes_are_paced_by_the_bytes_of_the_last_one() -> None:
    large = Written(100_000, 5000, 10, NOW - 100, NOW, 100_000)
    assert head_write_delay(large, NOW) == 100_000 / HEAD_WRITE_RATE
    assert head_write_delay(large, NOW + 1) == 0
    small = Written(100, 5, 10, NOW - 100, NOW, 100)
    assert head_write_delay(small, NOW) < 0.001


def random_list(count: int, seed: int = 7, expiring: bool = True) -> PackedBanList:
    generator = random.Random(seed)
    builder = Builder(expiring)
    for _ in range(count):
        builder.add(
            Prefix(IPV4, generator.getrandbits(32), 32), 1_767_000_000 + generator.randrange(86400)
        )
    for _ in range(count // 10):
        network = generator.getrandbits(64) << 64
        builder.add(Prefix(IPV6, network, 64), 1_767_000_000 + generator.randrange(86400))
    return builder.finish()


def test_parts_are_contiguous_sorted_runs_under_the_size_limit() -> None:
    banlist = random_list(300_000)
    parts = list(encode_parts(banlist))
    assert len(parts) >= 2
    assert all(len(part) <= PART_MAX_BYTES for part in parts)
    order: list[tuple[int, int, int]] = []
    for part in parts:
        for section in decode_part(part):
            order += [
                (section.version, section.length, prefix.network) for prefix, _ in section.bans()
            ]
    assert order == sorted(order)
    assert len(order) == len(set(order)) == len(banlist)


def test_a_list_too_large_for_the_parts_says_so() -> None:
    banlist = random_list(300_000)
    try:
        list(encode_parts(banlist, limit=1))
    except SnapshotTooLargeError:
        return
    raise AssertionError("300,000 random bans fitted in one part")


def test_an_empty_list_has_no_part() -> None:
    assert list(encode_parts(PackedBanList())) == []


def test_a_hit_bans_its_covering_prefix() -> None:
    v4 = ban_prefix(0xC6336407, (24, 64))  # 198.51.100.7
    assert v4 == Prefix(IPV4, 0xC6336400, 24)
    flag = 1 << 128
    address = 0x20010DB8_00000001_DEADBEEF_00000001
    assert ban_prefix(flag | address, (32, 64)) == Prefix(IPV6, 0x20010DB8_00000001 << 64, 64)
    assert ban_prefix(flag | address, (32, 128)) == Prefix(IPV6, address, 128)


def test_a_lift_of_an_address_lifts_the_ban_covering_it_a_range_the_bans_inside() -> None:
    address = Prefix(IPV6, 0x20010DB8_00000001_00000000_00000009, 128)
    ban = Prefix(IPV6, 0x20010DB8_00000001 << 64, 64)
    assert lifted_ban(address, (32, 64)) == ban
    assert lifted_ban(Prefix(IPV6, 0x20010DB8 << 96, 32), (32, 64)) is None
    assert overlaps(ban, Prefix(IPV6, 0x20010DB8 << 96, 32))
    assert not overlaps(ban, Prefix(IPV6, 0x20010DB9 << 96, 32))
    assert not overlaps(Prefix(IPV4, 0, 32), Prefix(IPV6, 0, 0))


def test_the_filter_digest_follows_the_prefix_lengths() -> None:
    spec = parse_spec({})
    assert filter_key(spec.allowlist, None, spec.ban_prefix_lengths) == filter_key(spec.allowlist)
    other = parse_spec({"banPrefixLengths": {"ipv4": 24, "ipv6": 48}})
    assert filter_key(other.allowlist, None, other.ban_prefix_lengths) != filter_key(spec.allowlist)


def test_stamps_are_expiries_with_a_duration_and_hit_seconds_without() -> None:
    assert stamp_of(1_767_225_600_001, 3600) == 1_767_225_601 + 3600
    assert stamp_of(1_767_225_600_000, None) == 1_767_225_600
