"""The delivery worker: moves outbox hits into the ledger and out as alert mails.

The ledger and the mail are independent channels, each run by its own thread
with its own back-off and its own outbox connection (the outbox keeps one
SQLite connection per thread and serialises writers with an ``flock``). So a
database outage does not hold mails back, and an SMTP server that is down, or
that accepts connections and never answers (every SMTP step may wait 10 s, for
up to 100 mails a round), does not hold ledger rows back; ledger rows are how
a ban reaches the other replicas. A channel that fails waits 0.5 s, then twice
as long after each further failure, up to 30 s; one success resets it.

Before its first delivery the ledger channel creates the ledger schema and,
run alone, loads the bans already in the ledger, retried at least every 2 s until the
database answers; a replica run alone is not ready until then (``/readyz``).
Stopping sets the event both threads wait on and cuts the SMTP connection the
mail thread may be blocked on, so a stop never waits for a silent mail server.
Once the bans are loaded, the ledger thread also follows the lift table
(:mod:`blacklist_service.delivery.lifts`): in the same thread as the ledger delivery,
so a lift can never overtake a hit on its way from the outbox to the ledger.
"""

from __future__ import annotations

import logging
import smtplib
import sqlite3
import threading
import time
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from blacklist_contract.tables import LEDGER_TABLE
from blacklist_service.bans.store import BanStore
from blacklist_service.config import Settings
from blacklist_service.delivery import alerts, ledger
from blacklist_service.delivery.lifts import LiftFollower, load_bans
from blacklist_service.delivery.outbox import Outbox
from blacklist_service.markers import bans_loaded_marker, ledger_marker
from blacklist_service.metrics import DELIVERIES

logger = logging.getLogger(__name__)
POLL_INTERVAL = 0.1
# Until the ledger's bans are loaded a lone replica is not ready: retry often.
STARTUP_RETRY_MAXIMUM = 2.0
# A channel's round ends within this after a stop (the mail's SMTP connection is cut).
JOIN_TIMEOUT = 5.0


@dataclass
class Backoff:
    """When a failing channel may try again."""

    initial: float = 0.5
    maximum: float = 30.0
    delay: float = 0.0
    next_attempt: float = 0.0
    failures: int = 0

    def ready(self) -> bool:
        """Whether the channel may try now."""
        return time.monotonic() >= self.next_attempt

    def failed(self) -> float:
        """Record a failure; return the seconds until the next attempt."""
        self.failures += 1
        self.delay = min(self.maximum, self.delay * 2 if self.delay else self.initial)
        self.next_attempt = time.monotonic() + self.delay
        return self.delay

    def succeeded(self) -> None:
        """Record a success: the next attempt may come at once."""
        self.failures = 0
        self.delay = 0.0
        self.next_attempt = 0.0


class Channel:
    """One delivery channel, run by its own thread until a stop."""

    name = "channel"

    def __init__(self, outbox: Outbox, backoff: Backoff) -> None:
        self.outbox = outbox
        self.backoff = backoff

    def deliver_once(self) -> bool:
        """One round; True when there may be more to do at once."""
        raise NotImplementedError

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set, then release this thread's connections."""
        try:
            while not stop.is_set():
                busy = False
                if self.backoff.ready():
                    try:
                        busy = self.deliver_once()
                    except Exception:
                        # Whatever went wrong, the channel lives on: the hits stay in the outbox.
                        logger.exception("Delivery round of the %s failed", self.name)
                        self.backoff.failed()
                stop.wait(0 if busy else POLL_INTERVAL)
        finally:
            self.close()

    def close(self) -> None:
        """Release this thread's outbox connection."""
        self.outbox.close()

    def failed(self, what: str, error: object) -> None:
        """Count a failed round and log when the next one comes."""
        delay = self.backoff.failed()
        DELIVERIES.labels(self.name, "failed").inc()
        logger.warning(
            "%s unavailable (attempt %d, next in %.1f s): %s",
            what,
            self.backoff.failures,
            delay,
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )

    def delivered(self, count: int, what: str) -> None:
        """Count a successful round: the next one may come at once."""
        self.backoff.succeeded()
        DELIVERIES.labels(self.name, "delivered").inc(count)
        logger.info("%s: %d", what, count)


class LedgerChannel(Channel):
    """Creates the ledger, loads its bans once, then moves outbox hits into it."""

    name = "ledger"

    def __init__(self, settings: Settings, outbox: Outbox, bans: BanStore) -> None:
        super().__init__(outbox, Backoff(maximum=STARTUP_RETRY_MAXIMUM))
        self.settings = settings
        self.bans = bans
        self._engine: Engine | None = None
        self._schema_ready = False
        self._bans_loaded = False
        self._set_aside_drained = False
        self.lengths = (settings.ban_prefix_ipv4, settings.ban_prefix_ipv6)
        self.lifts = LiftFollower(settings.state_dir, outbox, bans, self.lengths)

    @property
    def engine(self) -> Engine:
        """The ledger's engine, made on first use (only the delivering worker needs one)."""
        if self._engine is None:
            self._engine = ledger.make_engine(self.settings.database_url)
        return self._engine

    def deliver_once(self) -> bool:
        """Set-aside outboxes, schema and bans first (once), then a batch of hits."""
        state_dir = self.settings.state_dir
        if not self._set_aside_drained:
            # Before the round's delivery, so the copied hits go out with the rest; a
            # failure (a full disk) is retried next round and never holds the outbox back.
            try:
                self.outbox.drain_set_aside()
            except (sqlite3.Error, OSError) as error:
                logger.warning("Draining set-aside outboxes failed (retried next round): %s", error)
            else:
                self._set_aside_drained = True
        try:
            if not self._schema_ready:
                ledger.ensure_schema(self.engine)
                self._schema_ready = True
                logger.info("Ledger table %s is ready", LEDGER_TABLE)
            if not self._bans_loaded:
                self._load_bans()
                self._bans_loaded = True
                bans_loaded_marker(state_dir).touch()
                self.backoff = Backoff()  # from now on, the usual back-off
            ledger_marker(state_dir).touch()
            busy = self.lifts.poll_if_due(self.engine)
            hits = self.outbox.pending_ledger()
            if not hits:
                return busy
            ledger.insert_hits(self.engine, hits)
        except SQLAlchemyError as error:
            ledger_marker(state_dir).unlink(missing_ok=True)
            self.failed("Ledger", error)
            return False
        self.outbox.mark_ledger_delivered([hit.event_id for hit in hits])
        self.delivered(len(hits), "Hits delivered to the ledger")
        return True

    def _load_bans(self) -> None:
        """Run alone, add the bans the ledger still holds, so bans survive a restart.

        The one reader of ``ledger.banned_addresses`` in the service (via
        ``load_bans``). In a cluster the operator's ban list is the truth: a
        ban loaded here would outlive the deletion of its ledger rows.
        """
        started = time.monotonic()
        if self.settings.in_cluster:
            return
        total = load_bans(self.engine, self.bans, self.settings.ban_duration, self.lengths)
        logger.info(
            "Loaded the ledger's bans in %.2f s: %d new, %d in the ban list",
            time.monotonic() - started,
            total,
            len(self.bans),
        )

    def close(self) -> None:
        """Release the database connections and this thread's outbox connection."""
        if self._engine is not None:
            self._engine.dispose()
        super().close()


class MailChannel(Channel):
    """Sends one alert mail per outbox hit."""

    name = "mail"

    def __init__(self, app: Flask, settings: Settings, outbox: Outbox) -> None:
        super().__init__(outbox, Backoff())
        self.app = app
        self.settings = settings
        self.interrupter = alerts.Interrupter()

    def deliver_once(self) -> bool:
        """A batch of mails over one SMTP connection."""
        hits = self.outbox.pending_mail()
        if not hits:
            return False
        try:
            sent = alerts.send_alerts(
                self.app,
                hits,
                self.settings.alert_recipient,
                self.settings.mail_enabled,
                self.interrupter,
            )
        except (OSError, smtplib.SMTPException) as error:
            if self.interrupter.interrupted:
                return False  # stopping: the mails stay in the outbox for the next run
            self.failed("SMTP", error)
            return False
        self.outbox.mark_mail_delivered(sent)
        self.delivered(len(sent), "Alert mails sent")
        return True

    def interrupt(self) -> None:
        """Cut the SMTP connection a round may be blocked on (from another thread)."""
        self.interrupter.interrupt()


class Courier:
    """Runs the ledger and the mail channel, each in its own thread, until a stop."""

    def __init__(self, app: Flask, settings: Settings, outbox: Outbox, bans: BanStore) -> None:
        self.ledger = LedgerChannel(settings, outbox, bans)
        self.mail = MailChannel(app, settings, outbox)

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; return once both channels have finished."""
        threads = [
            # Daemons only so that a channel stuck past JOIN_TIMEOUT cannot hang the exit.
            threading.Thread(
                target=channel.run, args=(stop,), name=f"blacklist-{channel.name}", daemon=True
            )
            for channel in (self.ledger, self.mail)
        ]
        for thread in threads:
            thread.start()
        stop.wait()
        self.mail.interrupt()
        for thread in threads:
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                logger.warning("%s did not finish within %.0f s", thread.name, JOIN_TIMEOUT)
