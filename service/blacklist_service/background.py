"""The replica's background work, run by exactly one server worker at a time.

Every worker process starts a thread that tries to take an exclusive
``flock`` on ``STATE_DIR/leader.lock``. The holder runs the delivery worker
(:mod:`blacklist_service.delivery.courier`) and, in a cluster, the ban-list watcher
(:mod:`blacklist_service.bans.watcher`); the others keep trying once a second. The
kernel drops the lock when its holder exits or dies, so another worker takes
over without any coordination, and there is never more than one courier per
outbox (which keeps each hit's delivery serial).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from flask import Flask

from blacklist_service.bans.store import BanStore
from blacklist_service.bans.watcher import BanListWatcher
from blacklist_service.config import Settings
from blacklist_service.delivery.courier import Courier
from blacklist_service.delivery.outbox import Outbox
from blacklist_service.markers import synced_marker

logger = logging.getLogger(__name__)
LEADER_RETRY = 1.0


class Background:
    """Starts and stops the leader-elected background work of one app instance."""

    def __init__(self, app: Flask, settings: Settings, outbox: Outbox, bans: BanStore) -> None:
        self.app = app
        self.settings = settings
        self.outbox = outbox
        self.bans = bans
        self.stop_event = threading.Event()
        self.is_leader = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start competing for the leader lock (once per process)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="blacklist-background")
        self._thread.daemon = True  # stop() joins it; daemon only so a hard exit never hangs
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the work to stop and wait for the current delivery to finish."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._compete()
            except Exception:
                # A transient failure (too many open files, a full disk) must not end the
                # replica's delivery for the life of this worker: let go of the lock, retry.
                logger.exception("Background work failed; retried in %.0f s", LEADER_RETRY)
                self.stop_event.wait(LEADER_RETRY)

    def _compete(self) -> None:
        lock_path = self.settings.state_dir / "leader.lock"
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while not self.stop_event.is_set():
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self.stop_event.wait(LEADER_RETRY)
                    continue
                self._lead()
        finally:
            os.close(descriptor)  # releases the lock

    def _lead(self) -> None:
        self.is_leader = True
        logger.info("Worker %d delivers the outbox%s", os.getpid(),
                    " and follows the ban list" if self.settings.in_cluster else "")  # fmt: skip
        courier = Courier(self.app, self.settings, self.outbox, self.bans)
        if self.settings.in_cluster:
            marker = synced_marker(self.settings.state_dir)
            watcher = BanListWatcher(
                self.settings,
                self.bans,
                self.stop_event,
                marker.touch,
                courier.ledger.lifts.caught_up,
            )
            watcher.start()
        courier.run(self.stop_event)
