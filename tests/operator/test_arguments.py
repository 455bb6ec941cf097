"""The operator's command line: the log level comes from the flag, else the chart's variable."""

from __future__ import annotations

import pytest

from blacklist_operator.__main__ import LOG_LEVEL_ENV, parse_arguments


def test_the_log_level_defaults_to_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    assert parse_arguments([]).log_level == "info"


def test_the_log_level_comes_from_the_chart_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV, "warning")
    assert parse_arguments([]).log_level == "warning"
    assert parse_arguments(["--log-level", "ERROR"]).log_level == "error"


def test_an_unknown_log_level_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["--log-level", "verbose"])
    monkeypatch.setenv(LOG_LEVEL_ENV, "verbose")
    with pytest.raises(SystemExit):
        parse_arguments([])
