"""Alert mails about ``/blacklisted`` hits, built and sent with Flask-Mail.

Each mail's ``Message-ID`` is derived from the hit's event id, so in the rare
case of a mail sent twice (the SMTP server accepted it but the worker died
before recording that) the copies are recognisable as one alert.

A send can be interrupted from another thread (:class:`Interrupter`): stopping
the replica must not wait for a mail server that never answers.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import socket
import threading
from collections.abc import Sequence

from flask import Flask
from flask_mail import Connection, Mail, Message

from blacklist_service.delivery.outbox import Hit

logger = logging.getLogger(__name__)
SMTP_TIMEOUT = 10.0
MESSAGE_ID_DOMAIN = "blacklist-service"


class Interrupter:
    """Lets one thread cut the SMTP connections another thread is blocked on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hosts: list[smtplib.SMTP] = []
        self.interrupted = False

    def track(self, host: smtplib.SMTP) -> None:
        """Follow ``host`` (before it connects); refuse once interrupted."""
        with self._lock:
            if self.interrupted:
                raise smtplib.SMTPServerDisconnected("sending was interrupted")
            self._hosts = [*self._hosts[-7:], host]  # only the current one matters

    def interrupt(self) -> None:
        """Shut the sockets down: a blocked read or write returns at once with an error."""
        with self._lock:
            self.interrupted = True
            hosts = list(self._hosts)
        for host in hosts:
            sock = getattr(host, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed
                    sock.shutdown(socket.SHUT_RDWR)


class InterruptibleSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` whose connection an :class:`Interrupter` can cut."""

    def __init__(self, host: str, port: int, timeout: float, interrupter: Interrupter) -> None:
        interrupter.track(self)
        super().__init__(host, port, timeout=timeout)


class InterruptibleSMTPSSL(smtplib.SMTP_SSL):
    """``smtplib.SMTP_SSL`` whose connection an :class:`Interrupter` can cut."""

    def __init__(self, host: str, port: int, timeout: float, interrupter: Interrupter) -> None:
        interrupter.track(self)
        super().__init__(host, port, timeout=timeout)


class TimeoutConnection(Connection):
    """Flask-Mail's SMTP connection with a socket timeout, so a hung server cannot stall us."""

    def __init__(self, mail: Mail, interrupter: Interrupter) -> None:
        self.interrupter = interrupter
        super().__init__(mail)

    def configure_host(self) -> smtplib.SMTP:
        """Connect, STARTTLS and log in as Flask-Mail does, with ``SMTP_TIMEOUT``."""
        server, port = self.mail.server, self.mail.port
        host: smtplib.SMTP
        if self.mail.use_ssl:
            host = InterruptibleSMTPSSL(server, port, SMTP_TIMEOUT, self.interrupter)
        else:
            host = InterruptibleSMTP(server, port, SMTP_TIMEOUT, self.interrupter)
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


def message_id(hit: Hit) -> str:
    """The Message-ID of the alert about ``hit``."""
    return f"<{hit.event_id}@{MESSAGE_ID_DOMAIN}>"


def alert_text(hit: Hit) -> str:
    """The body of the alert: which address hit which path when."""
    return (
        f"Address {hit.ip_address} requested {hit.path} at {hit.time.isoformat()} "
        "and is now banned.\n"
        f"Event id: {hit.event_id}\n"
    )


def build_alert(hit: Hit, recipient: str) -> Message:
    """The alert mail about ``hit`` (needs an app context for the default sender)."""
    message = Message(
        subject=f"Blacklisted: {hit.ip_address} requested {hit.path}",
        recipients=[recipient],
        body=alert_text(hit),
        extra_headers={"X-Blacklist-Event-Id": hit.event_id},
    )
    message.msgId = message_id(hit)
    return message


def send_alerts(
    app: Flask,
    hits: Sequence[Hit],
    recipient: str,
    enabled: bool,
    interrupter: Interrupter | None = None,
) -> list[str]:
    """Send one alert per hit over one SMTP connection; return the event ids sent.

    Without a mail server (``enabled`` false) each alert is logged instead. When
    SMTP fails part-way, the ids sent so far are returned so that only the rest
    is retried; when it fails before the first mail, the error propagates.
    """
    sent: list[str] = []
    with app.app_context():
        if not enabled:
            for hit in hits:
                logger.warning("Alert (no MAIL_SERVER set, not sent): %s", alert_text(hit).strip())
                sent.append(hit.event_id)
            return sent
        try:
            smtp = TimeoutConnection(app.extensions["mail"], interrupter or Interrupter())
            with smtp as connection:
                for hit in hits:
                    connection.send(build_alert(hit, recipient))
                    sent.append(hit.event_id)
        except (OSError, smtplib.SMTPException) as error:
            if not sent:
                raise
            logger.warning("SMTP failed after %d of %d alerts: %s", len(sent), len(hits), error)
    return sent
