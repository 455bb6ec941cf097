"""The service's log lines: ``LOG_FORMAT=text`` (default) or ``json``, never a secret.

``text`` is the line the service always wrote (time, level, process, logger,
message). ``json`` is one JSON object per line for log pipelines: ``time``
(UTC, ISO 8601), ``level``, ``logger``, ``message``, ``process``, and where a
request is being answered ``client_address`` and ``path``; a security event
carries ``event`` (``"ban"`` for a ``/blacklisted`` hit, logged at INFO: it is
what the service is for, not an error of it). An exception's traceback is the
``exception`` field rather than extra lines.

Whatever the format, the secrets the process was given (``MAIL_PASSWORD``,
``PGPASSWORD``, ``DB_PASSWORD``, the password of ``DATABASE_URL``) are replaced
by ``***`` in every line, tracebacks included, and so is the password of any URL written
``scheme://user:password@host``: a driver's error or a library's debug line
must not carry them to wherever logs are shipped.

Both servers take :func:`logging_config` (granian in each worker, gunicorn
through ``logconfig_dict``), so their own lines have the same shape.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any

from blacklist_contract.logs import json_fields

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
REDACTED = "***"
# Environment variables whose whole value is a secret.
SECRET_VARIABLES = ("MAIL_PASSWORD", "PGPASSWORD", "DB_PASSWORD")
# Secrets shorter than this are not searched for: replacing "a" everywhere would hide the log.
MINIMUM_SECRET_LENGTH = 3
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<at>@)")
# Request fields a JSON line carries, from the record's ``extra`` or the request in progress.
REQUEST_FIELDS = ("client_address", "path")
EVENT_FIELD = "event"


def secrets_from_environment() -> list[str]:
    """The secret values this process holds in its environment, longest first."""
    found = [os.environ.get(name, "") for name in SECRET_VARIABLES]
    url = os.environ.get("DATABASE_URL", "")
    if url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            password = make_url(url).password
        except ArgumentError:
            password = None
        found.append(str(password or ""))
    return sorted({s for s in found if len(s) >= MINIMUM_SECRET_LENGTH}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    """``text`` without the given secrets or any URL's password."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<at>", text)


class TextFormatter(logging.Formatter):
    """The service's text line, secrets redacted."""

    def __init__(self, fmt: str = TEXT_FORMAT) -> None:
        super().__init__(fmt)
        self.secrets = secrets_from_environment()

    def format(self, record: logging.LogRecord) -> str:
        """The line, redacted."""
        return redact(super().format(record), self.secrets)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, secrets redacted."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets = secrets_from_environment()

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        extra = {
            field: value
            for field in (*REQUEST_FIELDS, EVENT_FIELD)
            if (value := getattr(record, field, None)) is not None
        }
        line = json_fields(record, self, extra)
        # Redacted after encoding too: a secret must not survive as an escaped string.
        return redact(json.dumps(line, ensure_ascii=False, default=str), self.secrets)


class RequestFields(logging.Filter):
    """Adds the client address and path of the request being answered, if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keep the record; add the request's fields unless it has them."""
        # The server's main process never imports Flask, so it has no request either.
        if getattr(record, "path", None) is not None or "flask" not in sys.modules:
            return True
        from flask import has_request_context, request

        if has_request_context():
            from blacklist_service.http.guard import CLIENT_ADDRESS

            record.client_address = request.environ.get(CLIENT_ADDRESS) or request.remote_addr
            record.path = request.path
        return True


def logging_config(log_format: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the service and both servers in ``log_format``."""
    if log_format == "json":
        generic: dict[str, Any] = {"()": "blacklist_service.logs.JsonFormatter"}
        access: dict[str, Any] = {"()": "blacklist_service.logs.JsonFormatter"}
    else:
        generic = {"()": "blacklist_service.logs.TextFormatter", "fmt": TEXT_FORMAT}
        access = {"()": "blacklist_service.logs.TextFormatter", "fmt": "%(message)s"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": "blacklist_service.logs.RequestFields"}},
        "formatters": {"generic": generic, "access": access},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "generic",
                "filters": ["request"],
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "stream": "ext://sys.stdout",
            },
        },
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {
            "_granian": {"handlers": [], "level": "INFO", "propagate": True},
            "granian.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "gunicorn.error": {"handlers": [], "level": "INFO", "propagate": True},
            "gunicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }
