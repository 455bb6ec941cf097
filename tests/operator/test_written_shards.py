"""What the ban sync wrote: safe to forget while sync threads write, and per instance only."""

from __future__ import annotations

import threading

from blacklist_operator.runtime import WrittenShards


def test_an_edit_differs_and_an_unknown_shard_does_not() -> None:
    written = WrittenShards()
    written.remember("team", "web-banlist", "192.0.2.1\n")
    assert not written.differs("team", "web-banlist", "192.0.2.1\n")
    assert written.differs("team", "web-banlist", "192.0.2.2\n")
    assert written.differs("team", "web-banlist", None)
    assert not written.differs("team", "other-banlist", "anything")


def test_forgetting_an_instance_keeps_an_instance_whose_name_extends_it() -> None:
    written = WrittenShards()
    written.remember("team", "web-banlist", "a")
    written.remember("team", "web-banlist-3", "b")
    # The instance "web-banlist" has shards "web-banlist-banlist", ...
    written.remember("team", "web-banlist-banlist", "c")
    written.remember("other", "web-banlist", "d")
    written.forget_instance("team", "web")
    assert len(written) == 2
    assert written.differs("team", "web-banlist-banlist", "x")
    assert written.differs("other", "web-banlist", "x")


def test_forgetting_while_sync_threads_write_never_fails() -> None:
    written = WrittenShards()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        index = 0
        while not stop.is_set():
            written.remember("team", f"i{thread}-{index}-banlist", "x")
            index += 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(2000):
            try:
                written.forget_instance("team", "gone")
            except RuntimeError as error:  # "dictionary changed size during iteration"
                errors.append(error)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
