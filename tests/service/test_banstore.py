"""The ban store shared by the workers of a replica through its file: bans, expiries, lifts."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from blacklist_service.addresses import address_key
from blacklist_service.banstore import BAN_FILE, RECORD_SIZE, BanStore, decode, encode


def key(text: str) -> int:
    found = address_key(text)
    assert found is not None
    return found


def test_a_ban_in_one_store_holds_in_another_at_once(tmp_path: Path) -> None:
    first = BanStore(tmp_path / BAN_FILE)
    second = BanStore(tmp_path / BAN_FILE)
    assert key("1.2.3.4") not in second
    assert first.add([key("1.2.3.4")]) == [key("1.2.3.4")]
    assert key("1.2.3.4") in second
    assert key("1.2.3.5") not in second


def test_bans_survive_reopening(tmp_path: Path) -> None:
    BanStore(tmp_path / BAN_FILE).add([key("2001:db8::1"), key("1.2.3.4")])
    reopened = BanStore(tmp_path / BAN_FILE)
    assert reopened.keys() == {key("2001:db8::1"), key("1.2.3.4")}


def test_adding_a_banned_address_again_writes_nothing(tmp_path: Path) -> None:
    store = BanStore(tmp_path / BAN_FILE)
    store.add([key("1.2.3.4"), key("1.2.3.4")])
    assert store.add([key("1.2.3.4")]) == []
    assert (tmp_path / BAN_FILE).stat().st_size == RECORD_SIZE


def test_a_half_written_record_is_read_once_complete(tmp_path: Path) -> None:
    path = tmp_path / BAN_FILE
    store = BanStore(path)
    record = encode([(key("9.9.9.9"), 0)])
    with path.open("ab") as handle:
        handle.write(record[:7])
    assert key("9.9.9.9") not in store
    with path.open("ab") as handle:
        handle.write(record[7:])
    assert key("9.9.9.9") in store


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    stores = [BanStore(tmp_path / BAN_FILE) for _ in range(4)]

    def ban(index: int) -> None:
        for number in range(500):
            stores[index].add([key(f"10.{index}.{number // 256}.{number % 256}")])

    threads = [threading.Thread(target=ban, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = BanStore(tmp_path / BAN_FILE)
    assert len(reader) == 2000
    assert os.path.getsize(tmp_path / BAN_FILE) == 2000 * RECORD_SIZE


def test_records_hold_a_key_and_a_signed_value() -> None:
    records = [(key("1.2.3.4"), 0), (key("2001:db8::1"), 1_900_000_000), (key("1.2.3.4"), -5)]
    data = encode(records)
    assert len(data) == 3 * RECORD_SIZE == 72
    assert decode(data) == records
    assert decode(data + b"\x00" * 5) == records


def test_a_ban_with_an_expiry_ends_then(tmp_path: Path) -> None:
    store = BanStore(tmp_path / BAN_FILE)
    until = int(time.time()) + 2
    assert store.add([key("1.2.3.4")], until) == [key("1.2.3.4")]
    assert key("1.2.3.4") in store
    assert len(store) == 1
    time.sleep(until - time.time() + 0.05)
    assert key("1.2.3.4") not in store
    assert store.counts() == (0, 0, 1)
    # Banned again after expiry: a fresh ban.
    assert store.add([key("1.2.3.4")], until + 60) == [key("1.2.3.4")]
    assert key("1.2.3.4") in store


def test_a_ban_is_only_ever_extended_by_add(tmp_path: Path) -> None:
    store = BanStore(tmp_path / BAN_FILE)
    later = int(time.time()) + 600
    store.add([key("1.2.3.4")], later)
    assert store.add([key("1.2.3.4")], later - 300) == []
    assert store.state(key("1.2.3.4")) == later
    store.add([key("1.2.3.4")], later + 1)
    assert store.state(key("1.2.3.4")) == later + 1
    store.add([key("1.2.3.4")])
    assert store.state(key("1.2.3.4")) == 0
    size = (tmp_path / BAN_FILE).stat().st_size
    assert store.add([key("1.2.3.4")], later + 2) == []
    assert (tmp_path / BAN_FILE).stat().st_size == size


def test_a_lift_holds_in_every_store_and_a_later_ban_wins(tmp_path: Path) -> None:
    worker, leader = BanStore(tmp_path / BAN_FILE), BanStore(tmp_path / BAN_FILE)
    worker.add([key("1.2.3.4"), key("5.6.7.8")])
    lifted_ms = int(time.time() * 1000)
    assert leader.lift([(key("1.2.3.4"), lifted_ms)]) == [key("1.2.3.4")]
    assert key("1.2.3.4") not in worker
    assert key("5.6.7.8") in worker
    assert worker.state(key("1.2.3.4")) == -lifted_ms
    # The same lift again, or an older one, writes nothing.
    size = (tmp_path / BAN_FILE).stat().st_size
    assert leader.lift([(key("1.2.3.4"), lifted_ms), (key("1.2.3.4"), lifted_ms - 1)]) == []
    assert (tmp_path / BAN_FILE).stat().st_size == size
    # A hit after the lift bans again, in every store, and survives a reopening.
    assert worker.add([key("1.2.3.4")]) == [key("1.2.3.4")]
    assert key("1.2.3.4") in leader
    reopened = BanStore(tmp_path / BAN_FILE)
    assert reopened.keys() == {key("1.2.3.4"), key("5.6.7.8")}
    # A later lift wins over that ban, an address never banned here can be lifted too.
    leader.lift([(key("1.2.3.4"), lifted_ms + 10), (key("9.9.9.9"), lifted_ms + 10)])
    assert key("1.2.3.4") not in reopened
    assert key("9.9.9.9") not in reopened
    assert reopened.counts() == (1, 2, 0)


def test_a_decision_taken_holding_the_store_is_not_overtaken(tmp_path: Path) -> None:
    leader, worker = BanStore(tmp_path / BAN_FILE), BanStore(tmp_path / BAN_FILE)
    worker.add([key("1.2.3.4")])
    banned_again = threading.Event()

    def hit() -> None:
        worker.add([key("1.2.3.4")])
        banned_again.set()

    with leader.locked():
        assert key("1.2.3.4") in leader
        thread = threading.Thread(target=hit)
        thread.start()
        # The worker's ban waits for the lift, and then sees it: it bans again.
        assert not banned_again.wait(0.3)
        leader.lift([(key("1.2.3.4"), int(time.time() * 1000))])
    thread.join()
    assert key("1.2.3.4") in leader
    assert key("1.2.3.4") in worker
