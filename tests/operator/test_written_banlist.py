"""What the ban sync wrote: recent writes are its own, edits are not, per instance only."""

from __future__ import annotations

import threading

from blacklist_operator.runtime.state import WrittenBanList


def head(lines: str, count: str = "1") -> dict[str, object]:
    return {"data": {"addresses": lines, "count": count}}


def test_an_edit_differs_and_an_unknown_configmap_does_not() -> None:
    written = WrittenBanList()
    written.remember("team", "web-banlist", head("192.0.2.1\n"))
    assert not written.differs("team", "web-banlist", head("192.0.2.1\n"))
    assert written.differs("team", "web-banlist", head("192.0.2.2\n"))
    # An edit of the totals is an edit too, not only of the lines.
    assert written.differs("team", "web-banlist", head("192.0.2.1\n", count="7"))
    assert written.differs("team", "web-banlist", None)
    assert not written.differs("team", "other-banlist", head("anything"))


def test_the_event_of_an_earlier_write_is_not_an_edit() -> None:
    # Under load the head is written again before the watch delivers the previous write.
    written = WrittenBanList(remembered=4)
    for index in range(4):
        written.remember("team", "web-banlist", head(f"192.0.2.{index}\n"))
    assert not written.differs("team", "web-banlist", head("192.0.2.0\n"))
    written.remember("team", "web-banlist", head("192.0.2.9\n"))
    assert written.differs("team", "web-banlist", head("192.0.2.0\n"))


def test_a_part_compares_its_binary_data() -> None:
    written = WrittenBanList()
    written.remember("team", "web-banlist-1", {"binaryData": {"bans": "eJwLcgIAAUMA"}})
    assert not written.differs("team", "web-banlist-1", {"binaryData": {"bans": "eJwLcgIAAUMA"}})
    assert written.differs("team", "web-banlist-1", {"binaryData": {"bans": "AAAA"}})


def test_forgetting_an_instance_keeps_an_instance_whose_name_extends_it() -> None:
    written = WrittenBanList()
    written.remember("team", "web-banlist", head("a"))
    written.remember("team", "web-banlist-3", head("b"))
    written.remember("team", "web-banlist-63", head("b"))
    # The instance "web-banlist" has ConfigMaps "web-banlist-banlist", ...
    written.remember("team", "web-banlist-banlist", head("c"))
    written.remember("other", "web-banlist", head("d"))
    written.forget_instance("team", "web")
    assert len(written) == 2
    assert written.differs("team", "web-banlist-banlist", head("x"))
    assert written.differs("other", "web-banlist", head("x"))


def test_forgetting_while_sync_threads_write_never_fails() -> None:
    written = WrittenBanList()
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(thread: int) -> None:
        index = 0
        while not stop.is_set():
            written.remember("team", f"i{thread}-{index}-banlist", head("x"))
            index += 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(500):
            try:
                written.forget_instance("team", "gone")
            except RuntimeError as error:  # "dictionary changed size during iteration"
                errors.append(error)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
