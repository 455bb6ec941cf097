"""The operator's command line: log level and format, metrics, ban limit, images (flag or env)."""

from __future__ import annotations

import pytest

from blacklist_operator.__main__ import (
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    METRICS_ADDRESS_ENV,
    parse_arguments,
)
from blacklist_operator.runtime.config import (
    DEFAULT_DATABASE_IMAGE_ENV,
    DEFAULT_SERVICE_IMAGE_ENV,
    MAX_BANS_ENV,
)

EVERY_INTERFACE = "0.0.0.0"  # noqa: S104 (what an address without a host means)


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


def test_the_log_format_is_text_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOG_FORMAT_ENV, raising=False)
    assert parse_arguments([]).log_format == "text"
    assert parse_arguments(["--log-format", "JSON"]).log_format == "json"
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    assert parse_arguments([]).log_format == "json"
    assert parse_arguments(["--log-format", "text"]).log_format == "text"


def test_an_unknown_log_format_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["--log-format", "logfmt"])
    monkeypatch.setenv(LOG_FORMAT_ENV, "logfmt")
    with pytest.raises(SystemExit):
        parse_arguments([])


def metrics_address(*arguments: str) -> tuple[str, int] | None:
    found: tuple[str, int] | None = parse_arguments(list(arguments)).metrics_address
    return found


def test_metrics_are_served_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(METRICS_ADDRESS_ENV, raising=False)
    assert metrics_address() is None
    assert metrics_address("--metrics-address", "127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert metrics_address("--metrics-address", ":8081") == (EVERY_INTERFACE, 8081)
    assert metrics_address("--metrics-address", "[::]:9090") == ("::", 9090)
    monkeypatch.setenv(METRICS_ADDRESS_ENV, "127.0.0.2:9100")
    assert metrics_address() == ("127.0.0.2", 9100)


@pytest.mark.parametrize("address", ["8081", "host:", "host:http", "0.0.0.0:0", ":65536"])
def test_a_metrics_address_without_a_valid_port_is_refused(address: str) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["--metrics-address", address])


def test_the_ban_list_limit_is_a_flag_or_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_BANS_ENV, raising=False)
    assert parse_arguments([]).max_bans == 5_000_000
    assert parse_arguments(["--max-bans", "1000"]).max_bans == 1000
    monkeypatch.setenv(MAX_BANS_ENV, "250000")
    assert parse_arguments([]).max_bans == 250_000
    with pytest.raises(SystemExit):
        parse_arguments(["--max-bans", "0"])
    monkeypatch.setenv(MAX_BANS_ENV, "many")
    with pytest.raises(SystemExit):
        parse_arguments([])


def test_default_images_are_built_in_unless_the_chart_or_a_flag_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(DEFAULT_SERVICE_IMAGE_ENV, raising=False)
    monkeypatch.delenv(DEFAULT_DATABASE_IMAGE_ENV, raising=False)
    built_in = parse_arguments([])
    assert (built_in.default_service_image, built_in.default_database_image) == (
        "flask-blacklist-svc:v1",
        "postgres:16",
    )
    monkeypatch.setenv(DEFAULT_SERVICE_IMAGE_ENV, "registry.example/svc:1.2.3")
    monkeypatch.setenv(DEFAULT_DATABASE_IMAGE_ENV, "registry.example/postgres:16")
    chart = parse_arguments([])
    assert chart.default_service_image == "registry.example/svc:1.2.3"
    assert chart.default_database_image == "registry.example/postgres:16"
    flagged = parse_arguments(["--default-service-image", "svc@sha256:" + "0" * 64])
    assert flagged.default_service_image == "svc@sha256:" + "0" * 64


@pytest.mark.parametrize("image", ["", "has space"])
def test_a_default_image_that_is_no_reference_is_refused(
    monkeypatch: pytest.MonkeyPatch, image: str
) -> None:
    with pytest.raises(SystemExit):
        parse_arguments(["--default-service-image", image])
    monkeypatch.setenv(DEFAULT_DATABASE_IMAGE_ENV, "has space")
    with pytest.raises(SystemExit):
        parse_arguments([])
