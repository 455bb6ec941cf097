"""Ban-list ConfigMap lines (``ADDRESS [EXPIRY]``) and the lifts-seen rule, without a cluster."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from blacklist_service.addresses import address_key
from blacklist_service.banlines import (
    LIFTS_SEEN_ANNOTATION,
    ParsedShard,
    bans_to_write,
    parse_line,
    parse_shard,
)
from blacklist_service.banstore import BAN_FILE, BanStore
from blacklist_service.config import Settings, defaults
from blacklist_service.watcher import BanListWatcher


def key(text: str) -> int:
    found = address_key(text)
    assert found is not None
    return found


def shard(addresses: str, lifts_seen: int | None = None) -> dict[str, Any]:
    """A shard ConfigMap as the API returns it."""
    metadata: dict[str, Any] = {"name": "bls-banlist-1"}
    if lifts_seen is not None:
        metadata["annotations"] = {LIFTS_SEEN_ANNOTATION: str(lifts_seen)}
    return {"metadata": metadata, "data": {"addresses": addresses}}


def test_a_line_is_an_address_with_an_optional_expiry() -> None:
    assert parse_line("1.2.3.4") == (key("1.2.3.4"), 0)
    assert parse_line("::ffff:1.2.3.4 1900000000") == (key("1.2.3.4"), 1_900_000_000)
    assert parse_line("2001:db8::1\t1900000000 ") == (key("2001:db8::1"), 1_900_000_000)
    for bad in ("", "nonsense", "1.2.3.4 soon", "1.2.3.4 -5", "1.2.3.4 0", "1.2.3.4 1 2",
                "1.2.3.4 1.5", "1.2.3.4 ١٢٣"):  # fmt: skip
        assert parse_line(bad) is None, bad


def test_a_shard_gives_its_bans_lifts_seen_and_bad_lines() -> None:
    parsed = parse_shard(shard("1.2.3.4\n\n5.6.7.8 1900000000\nbad line here\n", 1234))
    assert parsed.bans == [(key("1.2.3.4"), 0), (key("5.6.7.8"), 1_900_000_000)]
    assert parsed.lifts_seen == 1234
    assert parsed.bad_lines == ["bad line here"]
    assert parse_shard(shard("1.2.3.4")).lifts_seen == 0
    assert parse_shard({"metadata": {}, "data": None}) == ParsedShard()


def test_the_lifts_seen_rule() -> None:
    now = time.time()
    future = int(now) + 600
    lifted = {key("1.2.3.4"): -5000, key("5.6.7.8"): -5000}
    bans = [(key("1.2.3.4"), 0), (key("5.6.7.8"), future)]
    # The operator had not seen the lift at 5000 ms: the lines are stale.
    assert bans_to_write(ParsedShard(bans, 4999), lifted.get, now) == []
    # It had, and still bans: a later hit.
    assert bans_to_write(ParsedShard(bans, 5000), lifted.get, now) == bans


def test_expiries_update_the_store_and_expired_lines_change_nothing() -> None:
    now = time.time()
    future = int(now) + 600
    state = {key("1.2.3.4"): future, key("5.6.7.8"): 0, key("9.9.9.9"): future + 60}
    lines = [
        (key("1.2.3.4"), future),  # as stored: nothing to write
        (key("5.6.7.8"), future),  # for ever became an expiry
        (key("9.9.9.9"), int(now) - 1),  # expired: the store keeps its later ban
        (key("10.0.0.1"), future),  # new
        (key("10.0.0.2"), int(now) - 1),  # new but expired
    ]
    assert bans_to_write(ParsedShard(lines), state.get, now) == [
        (key("5.6.7.8"), future),
        (key("10.0.0.1"), future),
    ]


def watcher(tmp_path: Path, store: BanStore) -> BanListWatcher:
    config = defaults()
    config.update(BANLIST_CONFIGMAP="bls-banlist", POD_NAMESPACE="test", STATE_DIR=str(tmp_path))
    stop = threading.Event()
    stop.set()  # no thread may follow anything: only _apply is driven
    return BanListWatcher(Settings.from_config(config), store, stop, lambda: None)


def test_the_watcher_applies_a_shard_to_the_store(tmp_path: Path) -> None:
    store = BanStore(tmp_path / BAN_FILE)
    follower = watcher(tmp_path, store)
    expiry = int(time.time()) + 2
    follower._apply(1, shard(f"1.2.3.4\n5.6.7.8 {expiry}\nnot-an-address\n"))
    assert key("1.2.3.4") in store
    assert key("5.6.7.8") in store
    # A line that disappears lifts nothing.
    follower._apply(1, shard(f"5.6.7.8 {expiry}\n"))
    assert key("1.2.3.4") in store
    # Lifted here at 10,000 ms; the shard written before the operator saw it is stale.
    store.lift([(key("1.2.3.4"), 10_000)])
    follower._apply(1, shard(f"1.2.3.4\n5.6.7.8 {expiry}\n", lifts_seen=9_999))
    assert key("1.2.3.4") not in store
    follower._apply(1, shard(f"1.2.3.4\n5.6.7.8 {expiry}\n", lifts_seen=10_000))
    assert key("1.2.3.4") in store
    # The expiry of a line holds: the ban ends then.
    time.sleep(expiry - time.time() + 0.05)
    assert key("5.6.7.8") not in store
