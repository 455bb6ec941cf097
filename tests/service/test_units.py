"""Pure parts: settings parsing, the outbox's bookkeeping, delivery back-off, alert mails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from blacklist_service import create_app
from blacklist_service.config import ConfigError, Settings, defaults, from_environment
from blacklist_service.delivery.alerts import alert_text, build_alert, message_id
from blacklist_service.delivery.courier import Backoff
from blacklist_service.delivery.outbox import Hit, Outbox


def settings(**overrides: object) -> Settings:
    config = defaults()
    config.update(overrides)
    return Settings.from_config(config)


def test_environment_booleans_and_integers_are_parsed() -> None:
    parsed = from_environment(
        {"MAIL_USE_TLS": "false", "MAIL_USE_SSL": "True", "MAIL_PORT": "2525"}
    )
    assert parsed == {"MAIL_USE_TLS": False, "MAIL_USE_SSL": True, "MAIL_PORT": 2525}
    with pytest.raises(ConfigError, match="MAIL_USE_TLS"):
        from_environment({"MAIL_USE_TLS": "maybe"})


def test_defaults(tmp_path: Path) -> None:
    found = settings(STATE_DIR=str(tmp_path))
    assert found.port == 5004
    assert found.alert_recipient == "test@domain.com"
    assert found.database_url == f"sqlite:///{tmp_path / 'ledger.sqlite3'}"
    assert not found.mail_enabled
    assert not found.in_cluster
    assert not found.trusted_proxies
    assert not found.allowlist


def test_bad_settings_stop_the_start() -> None:
    with pytest.raises(ConfigError, match="nonsense"):
        settings(ALLOWLIST="10.0.0.0/8,nonsense")
    with pytest.raises(ConfigError, match="POD_NAMESPACE"):
        settings(BANLIST_CONFIGMAP="x-banlist", SERVICE_ACCOUNT_DIR="/nonexistent")


def test_outbox_keeps_a_hit_until_both_deliveries_are_done(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    hit = Hit.now("1.2.3.4", "/blacklisted")
    outbox.record(hit)
    assert outbox.pending_ledger() == [hit]
    assert outbox.pending_mail() == [hit]
    outbox.mark_ledger_delivered([hit.event_id])
    assert outbox.pending_ledger() == []
    assert outbox.counts() == (0, 1)
    reopened = Outbox(tmp_path / "outbox.sqlite3")
    assert reopened.pending_mail() == [hit]
    reopened.mark_mail_delivered([hit.event_id])
    assert outbox.counts() == (0, 0)


def test_backoff_doubles_up_to_a_cap_and_resets() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0)
    assert backoff.ready()
    assert [backoff.failed() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert not backoff.ready()
    backoff.succeeded()
    assert backoff.ready()
    assert backoff.failed() == 0.5


def test_alert_mail_names_address_path_time_and_event(tmp_path: Path) -> None:
    hit = Hit("0f8c1d5e-1111-2222-3333-444455556666", "2001:db8::7", "/blacklisted",
              datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))  # fmt: skip
    text = alert_text(hit)
    assert "2001:db8::7" in text
    assert "/blacklisted" in text
    assert "2026-01-02T03:04:05+00:00" in text
    app = create_app({"STATE_DIR": str(tmp_path), "BACKGROUND": False})
    with app.app_context():
        message = build_alert(hit, "ops@example.com")
        assert message.recipients == ["ops@example.com"]
        assert message.msgId == message_id(hit) == f"<{hit.event_id}@blacklist-service>"
        assert b"Message-ID: <0f8c1d5e-1111-2222-3333-444455556666@blacklist-service>" in (
            message.as_bytes()
        )


def test_the_server_setting_defaults_to_granian_and_refuses_others() -> None:
    from blacklist_service.serving.server import server_name

    assert server_name(None) == "granian"
    assert server_name("") == "granian"
    assert server_name(" Gunicorn ") == "gunicorn"
    with pytest.raises(ConfigError, match="SERVER"):
        server_name("uwsgi")


def test_request_counting_binds_each_child_once() -> None:
    from blacklist_service.metrics import REQUESTS, count_request

    before = REQUESTS.labels("/readyz", "503")._value.get()
    count_request("/readyz", "503 SERVICE UNAVAILABLE")
    count_request("/readyz", "503 SERVICE UNAVAILABLE")
    assert REQUESTS.labels("/readyz", "503")._value.get() == before + 2
