"""A failing outbox never stops a ban.

The outbox is how a hit reaches the ledger and the mail, but the ban is what
protects the service: when the outbox cannot take a hit (a lock held, a full
disk) ``/blacklisted`` still bans and answers 444, logs and counts the failure;
a corrupt outbox file found at start is set aside and replaced, so the replica
starts instead of crash-looping on a file its ``emptyDir`` keeps.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from tests.service.processes import ServiceFactory

pytestmark = pytest.mark.slow

GARBAGE = b"this is not a SQLite database\x00\xff" * 200


def test_a_corrupt_outbox_is_set_aside_and_the_replica_starts(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory.unstarted()
    service.state_dir.mkdir(parents=True)
    (service.state_dir / "outbox.sqlite3").write_bytes(GARBAGE)
    service.start()

    assert wait_until(lambda: get(f"{service.url}/readyz").status == 200, timeout=15)
    assert get(f"{service.url}/blacklisted", source="127.0.0.41").status == 444
    for _ in range(6):
        assert get(f"{service.url}/?n=2", source="127.0.0.41").status == 403
    set_aside = list(service.state_dir.glob("outbox.sqlite3.corrupt-*"))
    assert [path.read_bytes() for path in set_aside] == [GARBAGE]
    log = service.log()
    assert "ERROR" in log
    assert "set aside" in log
    metrics = get(service.metrics_url).body
    assert "blacklist_outbox_set_aside_total 1.0" in metrics
    with sqlite3.connect(service.state_dir / "outbox.sqlite3") as outbox:
        assert outbox.execute("PRAGMA quick_check").fetchone() == ("ok",)


def test_a_held_outbox_lock_still_bans_and_answers_444(service_factory: ServiceFactory) -> None:
    service = service_factory()
    assert wait_until(lambda: get(f"{service.url}/readyz").status == 200, timeout=15)

    # Another process holds the outbox's write lock.
    descriptor = os.open(service.state_dir / "outbox.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        started = time.monotonic()
        assert get(f"{service.url}/blacklisted", source="127.0.0.43").status == 444
        assert time.monotonic() - started < 5.0
    finally:
        os.close(descriptor)
    for _ in range(6):
        assert get(f"{service.url}/?n=2", source="127.0.0.43").status == 403

    # Another process holds SQLite's own write lock on the outbox database.
    database = sqlite3.connect(service.state_dir / "outbox.sqlite3", isolation_level=None)
    database.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert get(f"{service.url}/blacklisted", source="127.0.0.44").status == 444
        assert time.monotonic() - started < 5.0
    finally:
        database.execute("ROLLBACK")
        database.close()
    for _ in range(6):
        assert get(f"{service.url}/?n=2", source="127.0.0.44").status == 403

    log = service.log()
    assert "Could not record the hit of 127.0.0.43" in log
    assert "Could not record the hit of 127.0.0.44" in log
    metrics = get(service.metrics_url).body
    assert "blacklist_outbox_record_failures_total 2.0" in metrics
