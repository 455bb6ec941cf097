"""The production server alone (SQLite ledger, no mail server): bans, allowlist, proxies."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_service.serving.server import STOPPED_MESSAGE
from tests.service.processes import ServiceFactory

pytestmark = pytest.mark.slow


def test_standalone_ledger_bans_and_probes(service_factory: ServiceFactory) -> None:
    service = service_factory()
    # Loopback is not exempt: the original silently whitelisted 127.0.0.1.
    assert get(f"{service.url}/blacklisted", source="127.0.0.1").status == 444
    for path in ["/?n=2", "/blacklisted", "/metrics", "/no-such-page"]:
        assert get(f"{service.url}{path}", source="127.0.0.1").status == 403, path
    assert get(f"{service.url}/healthz", source="127.0.0.1").status == 200
    # Ready once the ledger's bans are loaded (a fraction of a second after the start).
    assert wait_until(
        lambda: get(f"{service.url}/readyz", source="127.0.0.1").status == 200, timeout=10
    )
    assert get(f"{service.url}/?n=2", source="127.0.0.2").body == "4.0"

    # Without DATABASE_URL the ledger is a SQLite file in STATE_DIR.
    ledger = service.state_dir / "ledger.sqlite3"

    def rows() -> list[tuple[str, str]]:
        if not ledger.exists():
            return []
        with sqlite3.connect(ledger) as connection:
            try:
                found = connection.execute("SELECT path, ip_address FROM denied_access_ledger")
            except sqlite3.OperationalError:
                return []
            return [(str(path), str(address)) for path, address in found.fetchall()]

    assert wait_until(lambda: bool(rows()), timeout=15)
    assert rows() == [("/blacklisted", "127.0.0.1")]
    # Without MAIL_SERVER the alert is logged instead of sent.
    assert wait_until(lambda: "no MAIL_SERVER set" in service.log(), timeout=15)

    metrics = get(service.metrics_url)
    assert metrics.status == 200
    assert "blacklist_banned_addresses 1.0" in metrics.body
    assert "blacklist_refused_requests_total" in metrics.body
    # Refusals are counted with every other answer, by route (unknown paths as "other":
    # /no-such-page, and /metrics, which is not served on PORT).
    assert 'blacklist_http_requests_total{route="other",status="403"} 2.0' in metrics.body
    assert 'blacklist_http_requests_total{route="/blacklisted",status="444"} 1.0' in metrics.body
    assert 'blacklist_outbox_pending{channel="ledger"} 0.0' in metrics.body


def test_allowlisted_addresses_are_never_banned(service_factory: ServiceFactory) -> None:
    service = service_factory(ALLOWLIST="127.0.4.0/24")
    assert get(f"{service.url}/blacklisted", source="127.0.4.1").status == 444
    assert get(f"{service.url}/?n=2", source="127.0.4.1").status == 200
    assert get(f"{service.url}/blacklisted", source="127.0.5.1").status == 444
    assert get(f"{service.url}/?n=2", source="127.0.5.1").status == 403


def test_forwarded_for_is_believed_only_from_trusted_proxies(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory(TRUSTED_PROXIES="127.0.6.1")
    proxy, stranger = "127.0.6.1", "127.0.6.2"

    def via(source: str, client: str, path: str = "/?n=2") -> int:
        return get(
            f"{service.url}{path}", source=source, headers={"X-Forwarded-For": client}
        ).status

    assert via(proxy, "203.0.113.7", "/blacklisted") == 444
    assert via(proxy, "203.0.113.7") == 403
    assert via(proxy, "203.0.113.8") == 200
    assert get(f"{service.url}/?n=2", source=proxy).status == 200  # the proxy itself: not banned
    # An untrusted client cannot borrow a banned (or any other) address...
    assert via(stranger, "203.0.113.8", "/blacklisted") == 444
    # ...so its own address is the one banned.
    assert get(f"{service.url}/?n=2", source=stranger).status == 403
    assert via(proxy, "203.0.113.8") == 200


def test_sigterm_stops_gracefully_and_bans_survive(service_factory: ServiceFactory) -> None:
    service = service_factory()
    # Both workers up (a worker still loading when the stop comes has nothing to stop).
    assert wait_until(lambda: service.log().count(" serves") == 2, timeout=30)
    assert get(f"{service.url}/blacklisted", source="127.0.7.1").status == 444
    started = time.monotonic()
    assert service.stop() == 0
    assert time.monotonic() - started < 30
    log = service.log()
    assert STOPPED_MESSAGE in log
    # Each worker stopped its background work (the delivery worker ended its round).
    assert log.count("stopped its background work") == 2
    service.start()
    assert get(f"{service.url}/?n=2", source="127.0.7.1").status == 403
    assert get(f"{service.url}/?n=2", source="127.0.7.2").status == 200


def test_sigterm_lets_a_request_in_flight_finish(service_factory: ServiceFactory) -> None:
    service = service_factory()
    assert wait_until(lambda: get(f"{service.url}/readyz").status == 200, timeout=15)
    # A held outbox lock keeps /blacklisted busy for its 2 s wait: a request in flight.
    descriptor = os.open(service.state_dir / "outbox.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    statuses: list[int] = []
    caller = threading.Thread(
        target=lambda: statuses.append(
            get(f"{service.url}/blacklisted", source="127.0.7.3", timeout=20).status
        )
    )
    try:
        caller.start()
        time.sleep(0.5)
        assert service.stop() == 0
        caller.join(20)
    finally:
        os.close(descriptor)
    assert statuses == [444]
    assert STOPPED_MESSAGE in service.log()
    service.start()  # the ban it made survives
    assert get(f"{service.url}/?n=2", source="127.0.7.3").status == 403
