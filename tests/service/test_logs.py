"""``LOG_FORMAT``: text (default) or one JSON object per line; a hit is INFO; no secret logged.

The service runs as a process under both servers with a real PostgreSQL whose
password is in ``DATABASE_URL`` and a ``MAIL_PASSWORD``; the SMTP server
refuses to authenticate, and a client sends the password in a URL the access
log writes. No line may hold either secret, and every line of the JSON log is
a JSON object with the fields log pipelines key on.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

import pytest

from blacklist_devtools.http import get
from blacklist_devtools.kube import wait_until
from blacklist_devtools.postgres import PostgresServer
from blacklist_devtools.smtp import SmtpServer
from blacklist_service.logs import REDACTED, JsonFormatter, redact
from tests.service.conftest import ledger_addresses
from tests.service.processes import ServiceFactory

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (fails on a line that is not one)."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            parsed = json.loads(line)
            assert isinstance(parsed, dict), line
            lines.append(parsed)
    return lines


def test_redact_hides_secrets_and_url_passwords() -> None:
    secret = "s3cr3t-value"
    text = f"postgresql://user:{secret}@db:5432/x and smtp://me:other@mail and {secret}"
    assert redact(text, [secret]) == (
        f"postgresql://user:{REDACTED}@db:5432/x and smtp://me:{REDACTED}@mail and {REDACTED}"
    )


def test_a_json_line_carries_time_level_logger_message_and_request_fields(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAIL_PASSWORD", "mail-secret")
    record = logging.LogRecord(
        "blacklist_service.blacklisted", logging.INFO, __file__, 1, "hit %s", ("mail-secret",), None
    )
    record.event = "ban"
    record.client_address = "192.0.2.1"
    record.path = "/blacklisted"
    line = json.loads(JsonFormatter().format(record))
    assert TIME.match(line.pop("time"))
    assert line.pop("process") > 0
    assert line == {
        "level": "INFO",
        "logger": "blacklist_service.blacklisted",
        "message": f"hit {REDACTED}",
        "event": "ban",
        "client_address": "192.0.2.1",
        "path": "/blacklisted",
    }


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("server", ["granian", "gunicorn"])
def test_json_logs_mark_a_hit_as_an_info_ban_event_and_hold_no_secret(
    service_factory: ServiceFactory,
    empty_ledger: PostgresServer,
    smtp_server: SmtpServer,
    server: str,
) -> None:
    mail_password = f"mail-{secrets.token_hex(8)}"
    service = service_factory(
        SERVER=server,
        LOG_FORMAT="json",
        ACCESS_LOG="1",
        DATABASE_URL=empty_ledger.url,
        MAIL_SERVER=smtp_server.host,
        MAIL_PORT=str(smtp_server.port),
        # The test server offers no AUTH: every round fails, and says why in the log.
        MAIL_USERNAME="alerts",
        MAIL_PASSWORD=mail_password,
    )
    client = "127.0.12.1"
    assert get(f"{service.url}/blacklisted", source=client).status == 444
    assert wait_until(lambda: ledger_addresses(empty_ledger) == {client}, timeout=20)
    assert wait_until(lambda: "SMTP unavailable" in service.log(), timeout=20)
    # Secrets in a request line (a client's mistake, or a probe) are not written either.
    get(f"{service.url}/{empty_ledger.password}/{mail_password}", source="127.0.12.2")
    assert wait_until(lambda: "127.0.12.2" in service.log(), timeout=10)
    service.stop()

    log = service.log()
    assert empty_ledger.password not in log
    assert mail_password not in log
    lines = json_lines(log)
    assert all(TIME.match(line["time"]) for line in lines)
    assert all({"level", "logger", "message"} <= line.keys() for line in lines)
    hits = [line for line in lines if line.get("event") == "ban"]
    assert len(hits) == 1
    assert hits[0]["level"] == "INFO"
    assert hits[0]["logger"] == "blacklist_service.blacklisted"
    assert hits[0]["client_address"] == client
    assert hits[0]["path"] == "/blacklisted"
    assert not [line for line in lines if line["level"] == "ERROR" and "blocked" in line["message"]]


@pytest.mark.slow
def test_text_logs_stay_text_and_a_bad_log_format_stops_the_service(
    service_factory: ServiceFactory,
) -> None:
    service = service_factory()
    assert get(f"{service.url}/blacklisted", source="127.0.12.3").status == 444
    assert wait_until(lambda: "Access to this endpoint is blocked!" in service.log(), timeout=10)
    line = next(
        line for line in service.log().splitlines() if "Access to this endpoint is blocked!" in line
    )
    assert " INFO " in line
    assert not line.startswith("{")

    broken = service_factory.unstarted(LOG_FORMAT="yaml")
    with pytest.raises(RuntimeError, match="LOG_FORMAT"):
        broken.start()
