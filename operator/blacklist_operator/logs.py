"""The operator's log lines: ``--log-format text`` (default) or ``json``, never a URL's password.

``text`` is the line the operator always wrote: kopf's plain format, the message
alone (the container runtime stamps the time). ``json`` is one JSON object per
line for log pipelines, with the keys of the service's JSON lines
(``blacklist_service.logs``): ``time`` (UTC, ISO 8601), ``level``, ``logger``,
``message``, ``process``, ``exception`` for a traceback; and, for a line about
one BlacklistService, its ``namespace`` and ``name``. Those come from kopf's
per-object logger (the ``logger`` kopf hands a resource's handlers), which
attaches the object's reference to each record as ``k8s_ref``, or from
:func:`about`, which the work queue's workers and the ban sync wrap around the
startup handler's logger for each resource they serve.

Both formats replace the password of any ``scheme://user:password@`` in a line by
``***``: an external database's URL must not reach the logs through a driver's
error or a debug line.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import MutableMapping
from typing import Any

from blacklist_contract.logs import json_fields

LOG_FORMATS = ("text", "json")
REDACTED = "***"
# The record attribute of :func:`about`: (namespace, name).
RESOURCE_FIELD = "blacklist_resource"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<at>@)")


def redact(text: str) -> str:
    """``text`` without any URL's password."""
    return _URL_PASSWORD.sub(rf"\g<head>{REDACTED}\g<at>", text)


def resource_of(record: logging.LogRecord) -> tuple[str | None, str | None]:
    """The namespace and name of the BlacklistService a record is about, if any."""
    resource = getattr(record, RESOURCE_FIELD, None)
    if isinstance(resource, tuple):
        return resource[0], resource[1]
    reference = getattr(record, "k8s_ref", None)
    if isinstance(reference, dict):
        return reference.get("namespace"), reference.get("name")
    return None, None


class _About(logging.LoggerAdapter[Any]):
    """Adds the resource to each record, keeping the extras of the call and of kopf's adapter."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        """The message as is; the call's extra with the resource added."""
        kwargs["extra"] = {**(kwargs.get("extra") or {}), **(self.extra or {})}
        return msg, kwargs


def about(
    logger: logging.Logger | logging.LoggerAdapter[Any], namespace: str, name: str
) -> logging.LoggerAdapter[Any]:
    """``logger``, whose lines name the BlacklistService ``namespace/name`` (JSON fields)."""
    return _About(logger, {RESOURCE_FIELD: (namespace, name)})


class TextFormatter(logging.Formatter):
    """kopf's plain line (the message), redacted."""

    def __init__(self) -> None:
        super().__init__("%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, redacted."""
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the service's keys, redacted."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON object on one line."""
        extra: dict[str, str] = {}
        namespace, name = resource_of(record)
        if name:
            if namespace:
                extra["namespace"] = namespace
            extra["name"] = name
        line = json_fields(record, self, extra)
        # Redacted after encoding too: a password must not survive as an escaped string.
        return redact(json.dumps(line, ensure_ascii=False, default=str))


def use_format(log_format: str) -> None:
    """Give every handler of the root logger (kopf's, once configured) the ``log_format``."""
    formatter: logging.Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
