"""The ban store shared by the workers of a replica through its append-only file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from blacklist_service.addresses import address_key
from blacklist_service.banstore import RECORD_SIZE, BanStore


def key(text: str) -> int:
    found = address_key(text)
    assert found is not None
    return found


def test_a_ban_in_one_store_holds_in_another_at_once(tmp_path: Path) -> None:
    first = BanStore(tmp_path / "bans.log")
    second = BanStore(tmp_path / "bans.log")
    assert key("1.2.3.4") not in second
    assert first.add([key("1.2.3.4")]) == [key("1.2.3.4")]
    assert key("1.2.3.4") in second
    assert key("1.2.3.5") not in second


def test_bans_survive_reopening(tmp_path: Path) -> None:
    BanStore(tmp_path / "bans.log").add([key("2001:db8::1"), key("1.2.3.4")])
    reopened = BanStore(tmp_path / "bans.log")
    assert reopened.keys() == {key("2001:db8::1"), key("1.2.3.4")}


def test_adding_a_banned_address_again_writes_nothing(tmp_path: Path) -> None:
    store = BanStore(tmp_path / "bans.log")
    store.add([key("1.2.3.4"), key("1.2.3.4")])
    assert store.add([key("1.2.3.4")]) == []
    assert (tmp_path / "bans.log").stat().st_size == RECORD_SIZE


def test_a_half_written_record_is_read_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "bans.log"
    store = BanStore(path)
    record = key("9.9.9.9").to_bytes(RECORD_SIZE, "big")
    with path.open("ab") as handle:
        handle.write(record[:7])
    assert key("9.9.9.9") not in store
    with path.open("ab") as handle:
        handle.write(record[7:])
    assert key("9.9.9.9") in store


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    stores = [BanStore(tmp_path / "bans.log") for _ in range(4)]

    def ban(index: int) -> None:
        for number in range(500):
            stores[index].add([key(f"10.{index}.{number // 256}.{number % 256}")])

    threads = [threading.Thread(target=ban, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = BanStore(tmp_path / "bans.log")
    assert len(reader) == 2000
    assert os.path.getsize(tmp_path / "bans.log") == 2000 * RECORD_SIZE
