"""The ban store shared by the workers of a replica: prefixes, expiries, lifts, generations."""

from __future__ import annotations

import errno
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blacklist_contract.prefixes import (
    IPV4,
    IPV6,
    Prefix,
    covering_prefix,
    parse_address,
    parse_prefix,
)
from blacklist_contract.wire import Section
from blacklist_service.bans import store as store_module
from blacklist_service.bans.files import log_path
from blacklist_service.bans.records import LISTED, OWN, RECORD_SIZE, Record, decode, encode
from blacklist_service.bans.snapshot import Snapshot, SnapshotWriter
from blacklist_service.bans.store import BanStore
from blacklist_service.bans.values import lifted_at
from tests.clock import MovedClock
from tests.service.full_disk import fill, free, small_tmpfs


def prefix(text: str) -> Prefix:
    found = parse_prefix(text)
    assert found is not None
    return found


def banned(store: BanStore, address: str) -> bool:
    parsed = parse_address(address)
    assert parsed is not None
    return store.banned(*parsed)


def current_log(store: BanStore) -> Path:
    return log_path(store.directory, store.generation)


def test_a_ban_in_one_store_holds_in_another_at_once(tmp_path: Path) -> None:
    first, second = BanStore(tmp_path), BanStore(tmp_path)
    assert not banned(second, "1.2.3.4")
    assert first.ban([(prefix("1.2.3.4"), 0)]) == [prefix("1.2.3.4")]
    assert banned(second, "1.2.3.4")
    assert not banned(second, "1.2.3.5")


def test_a_prefix_ban_covers_its_addresses_only(tmp_path: Path) -> None:
    store = BanStore(tmp_path)
    hit = covering_prefix("2001:db8:1:2::a", 32, 64)
    assert hit == prefix("2001:db8:1:2::/64")
    store.ban([(hit, 0), (prefix("198.51.100.0/24"), 0)])
    assert banned(store, "2001:db8:1:2::b")
    assert banned(store, "2001:db8:1:2:ffff:ffff:ffff:ffff")
    assert not banned(store, "2001:db8:1:3::b")
    assert banned(store, "198.51.100.77")
    assert banned(store, "::ffff:198.51.100.1")  # the IPv4-mapped spelling is the same client
    assert not banned(store, "198.51.101.1")


def test_bans_survive_reopening(tmp_path: Path) -> None:
    BanStore(tmp_path).ban([(prefix("2001:db8::1"), 0), (prefix("1.2.3.4"), 0)])
    reopened = BanStore(tmp_path)
    assert banned(reopened, "2001:db8::1")
    assert banned(reopened, "1.2.3.4")
    assert reopened.counts() == (2, 0)


def test_banning_a_banned_prefix_again_writes_nothing(tmp_path: Path) -> None:
    store = BanStore(tmp_path)
    store.ban([(prefix("1.2.3.4"), 0), (prefix("1.2.3.4"), 0)])
    assert store.ban([(prefix("1.2.3.4"), 0)]) == []
    assert current_log(store).stat().st_size == RECORD_SIZE


def test_records_round_trip() -> None:
    records = [
        Record(OWN, prefix("1.2.3.4"), 0, 1_700_000_000),
        Record(LISTED, prefix("2001:db8:ffff:1::/64"), 1_900_000_000, 5),
        Record(OWN, prefix("2001:db8::1"), 7, 9),
    ]
    data = b"".join(encode(record) for record in records)
    assert len(data) == 3 * RECORD_SIZE == 96
    assert list(decode(data)) == records


def test_a_ban_with_an_expiry_ends_then(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = BanStore(tmp_path)
    until = int(time.time()) + 2
    assert store.ban([(prefix("1.2.3.4"), until)]) == [prefix("1.2.3.4")]
    assert banned(store, "1.2.3.4")
    # Past the expiry, as far as the store can tell, without waiting for it.
    monkeypatch.setattr(store_module, "time", MovedClock(until - time.time() + 0.05))
    assert not banned(store, "1.2.3.4")
    # Banned again after expiry: a fresh ban.
    assert store.ban([(prefix("1.2.3.4"), until + 60)]) == [prefix("1.2.3.4")]
    assert banned(store, "1.2.3.4")


def test_a_ban_is_only_ever_extended(tmp_path: Path) -> None:
    store = BanStore(tmp_path)
    later = int(time.time()) + 600
    store.ban([(prefix("1.2.3.4"), later)])
    assert store.ban([(prefix("1.2.3.4"), later - 300)]) == []
    assert store.value(prefix("1.2.3.4")) == later
    store.ban([(prefix("1.2.3.4"), later + 1)])
    assert store.value(prefix("1.2.3.4")) == later + 1
    store.ban([(prefix("1.2.3.4"), 0)])
    assert store.value(prefix("1.2.3.4")) == 0


def test_a_lift_holds_in_every_store_and_a_later_ban_wins(tmp_path: Path) -> None:
    worker, leader = BanStore(tmp_path), BanStore(tmp_path)
    worker.ban([(prefix("1.2.3.4"), 0), (prefix("5.6.7.8"), 0)])
    lifted_ms = int(time.time() * 1000) + 1000  # after the bans' second
    assert leader.lift([(prefix("1.2.3.4"), 7, lifted_ms)]) == [prefix("1.2.3.4")]
    assert not banned(worker, "1.2.3.4")
    assert banned(worker, "5.6.7.8")
    assert lifted_at(worker.value(prefix("1.2.3.4"))) == 7
    # The same lift again, or one committed before it (a lower id, even if its
    # transaction began later), writes nothing.
    size = current_log(leader).stat().st_size
    again = [(prefix("1.2.3.4"), 7, lifted_ms), (prefix("1.2.3.4"), 6, lifted_ms + 1)]
    assert leader.lift(again) == []
    assert current_log(leader).stat().st_size == size
    # A hit after the lift bans again, in every store, and survives a reopening.
    assert worker.ban([(prefix("1.2.3.4"), 0)]) == [prefix("1.2.3.4")]
    assert banned(leader, "1.2.3.4")
    reopened = BanStore(tmp_path)
    assert banned(reopened, "1.2.3.4")
    assert reopened.counts() == (2, 0)


def test_a_lift_spares_a_ban_this_replica_made_after_it(tmp_path: Path) -> None:
    store = BanStore(tmp_path)
    before = int(time.time() * 1000) - 5000
    store.ban([(prefix("10.9.8.0/24"), 0)])
    assert store.lift([(prefix("10.9.8.0/24"), 1, before)]) == []
    assert banned(store, "10.9.8.1")


def test_a_decision_taken_holding_the_store_is_not_overtaken(tmp_path: Path) -> None:
    leader, worker = BanStore(tmp_path), BanStore(tmp_path)
    worker.ban([(prefix("1.2.3.4"), 0)])
    banned_again = threading.Event()

    def hit() -> None:
        worker.ban([(prefix("1.2.3.4"), 0)])
        banned_again.set()

    with leader.locked():
        assert banned(leader, "1.2.3.4")
        thread = threading.Thread(target=hit)
        thread.start()
        # The worker's ban waits for the lift, and then sees it: it bans again.
        assert not banned_again.wait(0.3)
        leader.lift([(prefix("1.2.3.4"), 1, int(time.time() * 1000) + 1000)])
    thread.join()
    assert banned(leader, "1.2.3.4")
    assert banned(worker, "1.2.3.4")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    stores = [BanStore(tmp_path) for _ in range(4)]

    def ban(index: int) -> None:
        for number in range(500):
            stores[index].ban([(prefix(f"10.{index}.{number // 256}.{number % 256}"), 0)])

    threads = [threading.Thread(target=ban, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = BanStore(tmp_path)
    assert reader.counts() == (2000, 0)
    assert current_log(reader).stat().st_size == 2000 * RECORD_SIZE


def test_the_log_folds_into_a_new_generation_every_worker_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "FOLD_RECORDS", 1000)
    writer, reader = BanStore(tmp_path), BanStore(tmp_path)
    addresses = random.Random(7).sample(range(1 << 32), 5000)
    lifted = prefix("2001:db8::/64")
    writer.ban([(lifted, 0)])
    writer.lift([(lifted, 1, int(time.time() * 1000) + 1000)])
    for start in range(0, len(addresses), 250):
        writer.ban([(Prefix(IPV4, a, 32), 0) for a in addresses[start : start + 250]])
    assert writer.generation > 1
    assert reader.counts() == (5000, 1)
    assert all(reader.banned(IPV4, a) for a in addresses)
    assert not reader.banned(IPV6, lifted.network | 1)
    assert reader.generation == writer.generation
    # Only the current generation's files are left, and the log is small again.
    names = sorted(path.name for path in tmp_path.iterdir())
    assert names == ["current", "lock", f"log-{writer.generation}", f"snapshot-{writer.generation}"]
    assert current_log(writer).stat().st_size < 1000 * RECORD_SIZE
    # A store opened afresh agrees.
    assert BanStore(tmp_path).counts() == (5000, 1)


def test_a_short_write_on_a_full_disk_is_cut_back_and_raised(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "volume", "256k") as volume:
        store, other = BanStore(volume), BanStore(volume)
        store.ban([(prefix("1.2.3.4"), 0)])
        size = current_log(store).stat().st_size
        fill(volume)
        # 300 records (9,600 bytes): the rest of the log's page takes some of them,
        # the next page cannot be had. The kernel writes part, then refuses.
        batch = [(Prefix(IPV4, 0x0A000000 + n, 32), 0) for n in range(300)]
        with pytest.raises(OSError, match="No space left") as refused:
            store.ban(batch)
        assert refused.value.errno == errno.ENOSPC
        assert current_log(store).stat().st_size == size
        assert not banned(other, "10.0.0.1")
        free(volume)
        # Nothing torn: later bans are read whole by every store.
        store.ban([(prefix("7.7.7.7"), 0)])
        store.ban(batch)
        assert banned(other, "7.7.7.7")
        assert banned(other, "1.2.3.4")
        assert banned(other, "10.0.1.43")
        assert other.counts() == (302, 0)
        assert BanStore(volume).counts() == (302, 0)


def test_a_snapshot_streams_sorted_pieces_and_finds_every_entry(tmp_path: Path) -> None:
    rng = random.Random(3)
    wide = sorted({rng.getrandbits(128) for _ in range(3000)})
    clustered = sorted({(0x20010DB8 << 96) | rng.getrandbits(64) << 32 for _ in range(3000)})
    writer = SnapshotWriter(tmp_path)
    for values, length in ((clustered, 96), (wide, 128)):
        for start in range(0, len(values), 700):
            piece = Section.empty(IPV6, length)
            for value in values[start : start + 700]:
                piece.append(Prefix(IPV6, value, length), 42)
            writer.add(piece)
    snapshot = Snapshot(writer.finish({"operator_generation": "g"}))
    assert snapshot.count == len(wide) + len(clustered)
    assert all(snapshot.find(Prefix(IPV6, v, 128)) == 42 for v in wide)
    assert all(snapshot.find(Prefix(IPV6, v, 96)) == 42 for v in clustered)
    assert snapshot.find(Prefix(IPV6, wide[0] + 1, 128)) is None
    assert snapshot.metadata == {"operator_generation": "g"}
    # A piece that goes backwards is refused: a reader must never bisect unsorted keys.
    backwards = SnapshotWriter(tmp_path)
    piece = Section.empty(IPV4, 32)
    piece.append(Prefix(IPV4, 10, 32), 0)
    backwards.add(piece)
    with pytest.raises(ValueError, match="sorted"):
        backwards.add(piece)
    backwards.abandon()


@pytest.mark.process
def test_another_process_folding_under_a_reader_loses_nothing(tmp_path: Path) -> None:
    # The writer is another process, as a second server worker would be, with a
    # small fold bound so that it switches generations many times while we read.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from blacklist_contract.prefixes import Prefix;"
            "from blacklist_service.bans import store;"
            "store.FOLD_RECORDS = 300;"
            "bans = store.BanStore(Path(sys.argv[1]));"
            "[bans.ban([(Prefix(4, 0x0A000000 + n, 32), 0)]) for n in range(3000)]",
            str(tmp_path),
        ]
    )
    reader = BanStore(tmp_path)
    seen = 0
    while writer.poll() is None:
        seen = max(seen, reader.counts()[0])
        reader.banned(IPV4, 0x0A000000 + seen // 2)
    assert writer.returncode == 0
    assert reader.counts() == (3000, 0)
    assert all(reader.banned(IPV4, 0x0A000000 + n) for n in range(3000))
    assert reader.generation > 5
    assert len(list(tmp_path.glob("snapshot-*"))) == 1


def test_a_load_in_bulk_bans_as_ban_does_in_one_new_generation(tmp_path: Path) -> None:
    store, other = BanStore(tmp_path), BanStore(tmp_path)
    later = int(time.time()) + 600
    store.ban([(prefix("1.1.1.1"), 0), (prefix("2.2.2.2"), later)])
    store.lift([(prefix("3.3.3.3"), 1, int(time.time() * 1000) + 1000)])
    generation = store.generation
    fresh = store.ban_in_bulk(
        [
            (prefix("1.1.1.1"), later),  # banned for ever already: unchanged
            (prefix("2.2.2.2"), later + 60),  # longer: extended
            (prefix("3.3.3.3"), 0),  # lifted: banned again
            (prefix("4.4.4.0/24"), later),
            (prefix("4.4.4.0/24"), later - 60),  # shorter than the one before it
        ]
    )
    assert fresh == [prefix("3.3.3.3"), prefix("4.4.4.0/24")]
    assert other.value(prefix("1.1.1.1")) == 0
    assert store.generation == other.generation == generation + 1
    assert other.value(prefix("2.2.2.2")) == later + 60
    assert other.value(prefix("4.4.4.0/24")) == later
    assert banned(other, "3.3.3.3")
    assert banned(other, "4.4.4.200")
    assert other.counts() == (4, 0)
    assert current_log(other).stat().st_size == 0  # nothing went through the log
