"""The JSON log line both components write: one object per record, the same keys on both sides.

A log pipeline parses the operator's and the service's lines with one rule:
``time`` (UTC, milliseconds, ``Z``), ``level``, ``logger``, ``message`` and
``process``, then what each side adds (the resource of an operator line, the
request fields of a service line), then ``exception``. Each side redacts its
own secrets from the encoded line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any


def json_fields(
    record: logging.LogRecord, formatter: logging.Formatter, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """The fields of ``record``'s JSON line: the common keys, ``extra``, then any exception."""
    moment = datetime.fromtimestamp(record.created, UTC)
    line: dict[str, Any] = {
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "level": record.levelname,
        "logger": record.name,
        "message": record.getMessage(),
        "process": record.process,
        **extra,
    }
    if record.exc_info:
        line["exception"] = formatter.formatException(record.exc_info)
    elif record.exc_text:
        line["exception"] = record.exc_text
    return line
