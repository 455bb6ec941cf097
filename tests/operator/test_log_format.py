"""The operator's log formatters (``blacklist_operator.logs``): the JSON line and redaction."""

from __future__ import annotations

import json
import logging
import sys

from blacklist_operator.logs import JsonFormatter, TextFormatter, about, use_format


def record(message: str, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, message, None, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_json_line_has_the_services_keys() -> None:
    line = json.loads(JsonFormatter().format(record("Created Deployment bl")))
    assert line.keys() == {"time", "level", "logger", "message", "process"}
    assert line["level"] == "INFO"
    assert line["logger"] == "kopf.objects"
    assert line["message"] == "Created Deployment bl"
    assert line["time"].endswith("Z")


def test_a_line_about_a_resource_names_it() -> None:
    # kopf's per-object logger (the handlers' ``logger``) attaches this reference.
    reference = {"apiVersion": "blacklist.dev/v1", "kind": "BlacklistService"}
    kopf_line = record("Reconciled", k8s_ref={**reference, "namespace": "team", "name": "bl"})
    line = json.loads(JsonFormatter().format(kopf_line))
    assert (line["namespace"], line["name"]) == ("team", "bl")


def test_about_names_the_resource_on_our_own_lines() -> None:
    logger = logging.getLogger("test-log-format")
    logger.setLevel(logging.INFO)
    handler = Captured()
    logger.addHandler(handler)
    try:
        about(logger, "team", "bl").info("Created Deployment bl", extra={"kept": 1})
    finally:
        logger.removeHandler(handler)
    (made,) = handler.records
    line = json.loads(JsonFormatter().format(made))
    assert (line["namespace"], line["name"]) == ("team", "bl")
    assert made.kept == 1  # type: ignore[attr-defined]


def test_a_traceback_is_one_field_of_one_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record("Reconcile failed")
        failed.exc_info = sys.exc_info()
    text = JsonFormatter().format(failed)
    assert "\n" not in text
    assert "RuntimeError: boom" in json.loads(text)["exception"]


def test_no_url_password_in_either_format() -> None:
    message = "could not connect to postgresql://app:s3cr%40t@db.example:5432/bans"
    for formatter in (JsonFormatter(), TextFormatter()):
        text = formatter.format(record(message))
        assert "s3cr" not in text
        assert "postgresql://app:***@db.example:5432/bans" in text


def test_use_format_sets_every_root_handler() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        use_format("json")
        assert isinstance(handler.formatter, JsonFormatter)
        use_format("text")
        assert isinstance(handler.formatter, TextFormatter)
    finally:
        root.removeHandler(handler)
