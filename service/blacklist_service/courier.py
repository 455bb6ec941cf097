"""The delivery worker: moves outbox hits into the ledger and out as alert mails.

The ledger and the mail are separate channels with their own back-off, so a
database outage does not hold mails back and an SMTP outage does not hold
ledger rows back. A channel that fails waits 0.5 s, then twice as long after
each further failure, up to 30 s; one success resets it. The worker also
creates the ledger schema and loads the bans already in the ledger, both
retried the same way until the database answers, and then follows the lift
table (:mod:`blacklist_service.lifts`).
"""

from __future__ import annotations

import logging
import smtplib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from blacklist_service import alerts, ledger
from blacklist_service.banstore import BanStore
from blacklist_service.config import Settings
from blacklist_service.lifts import LiftFollower, load_bans
from blacklist_service.metrics import DELIVERIES
from blacklist_service.outbox import Outbox

logger = logging.getLogger(__name__)
POLL_INTERVAL = 0.1


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


class Courier:
    """Delivers every outbox hit to the ledger and as a mail, retrying until both are done."""

    def __init__(self, app: Flask, settings: Settings, outbox: Outbox, bans: BanStore) -> None:
        self.app = app
        self.settings = settings
        self.outbox = outbox
        self.bans = bans
        self.ledger_backoff = Backoff()
        self.mail_backoff = Backoff()
        self._engine: Engine | None = None
        self._schema_ready = False
        self._bans_loaded = False
        self.lifts = LiftFollower(settings.state_dir, outbox, bans)

    @property
    def engine(self) -> Engine:
        """The ledger's engine, made on first use (only the delivering worker needs one)."""
        if self._engine is None:
            self._engine = ledger.make_engine(self.settings.database_url)
        return self._engine

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set."""
        while not stop.is_set():
            try:
                busy = self.deliver_once()
            except Exception:
                # Whatever went wrong, the worker must live on: the hits stay in the outbox.
                logger.exception("Delivery round failed")
                busy = False
                stop.wait(1.0)
            stop.wait(0 if busy else POLL_INTERVAL)
        self.close()

    def deliver_once(self) -> bool:
        """One round over both channels; True when there may be more to do at once."""
        busy = False
        if self.ledger_backoff.ready():
            busy |= self._deliver_ledger()
            if self._bans_loaded:
                busy |= self.lifts.poll_if_due(self.engine)
        if self.mail_backoff.ready():
            busy |= self._deliver_mail()
        return busy

    def _deliver_ledger(self) -> bool:
        try:
            if not self._schema_ready:
                ledger.ensure_schema(self.engine)
                self._schema_ready = True
                logger.info("Ledger table %s is ready", ledger.LEDGER_TABLE)
            if not self._bans_loaded:
                self._load_bans()
                self._bans_loaded = True
            ledger_marker(self.settings.state_dir).touch()
            hits = self.outbox.pending_ledger()
            if not hits:
                return False
            ledger.insert_hits(self.engine, hits)
        except SQLAlchemyError as error:
            ledger_marker(self.settings.state_dir).unlink(missing_ok=True)
            delay = self.ledger_backoff.failed()
            DELIVERIES.labels("ledger", "failed").inc()
            logger.warning(
                "Ledger unavailable (attempt %d, next in %.1f s): %s",
                self.ledger_backoff.failures,
                delay,
                str(error).splitlines()[0],
            )
            return False
        self.outbox.mark_ledger_delivered([hit.event_id for hit in hits])
        self.ledger_backoff.succeeded()
        DELIVERIES.labels("ledger", "delivered").inc(len(hits))
        logger.info("Delivered %d hit(s) to the ledger", len(hits))
        return True

    def _load_bans(self) -> None:
        """Add the bans the ledger still holds, so bans survive a restart of the replica."""
        self.lifts.start(self.engine)
        total = load_bans(self.engine, self.bans, self.settings.ban_duration)
        logger.info("Loaded the ledger's bans: %d new, %d in the ban list", total, len(self.bans))

    def _deliver_mail(self) -> bool:
        hits = self.outbox.pending_mail()
        if not hits:
            return False
        try:
            sent = alerts.send_alerts(
                self.app, hits, self.settings.alert_recipient, self.settings.mail_enabled
            )
        except (OSError, smtplib.SMTPException) as error:
            delay = self.mail_backoff.failed()
            DELIVERIES.labels("mail", "failed").inc()
            logger.warning(
                "SMTP unavailable (attempt %d, next in %.1f s): %s",
                self.mail_backoff.failures,
                delay,
                error,
            )
            return False
        self.outbox.mark_mail_delivered(sent)
        self.mail_backoff.succeeded()
        DELIVERIES.labels("mail", "delivered").inc(len(sent))
        logger.info("Sent %d alert mail(s)", len(sent))
        return True

    def close(self) -> None:
        """Release the database connections and this thread's outbox connection."""
        if self._engine is not None:
            self._engine.dispose()
        self.outbox.close()


def ledger_marker(state_dir: Path) -> Path:
    """The file that says this replica's last attempt to reach the ledger succeeded."""
    return state_dir / "ledger.connected"
