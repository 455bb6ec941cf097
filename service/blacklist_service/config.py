"""The service's settings: defaults, then the environment, then test overrides.

The environment's names are listed in docs/configuration.md ("The service environment").

Flask keeps configuration in ``app.config`` (Flask-Mail reads its ``MAIL_*``
keys from there); :class:`Settings` is the typed view the rest of the code
uses, parsed once so that a bad value stops the service at start, not at the
first request.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blacklist_contract.database import DatabaseUrlError, parse_url
from blacklist_contract.prefixes import (
    DEFAULT_IPV4_LENGTH,
    DEFAULT_IPV6_LENGTH,
    FULL_LENGTH,
    IPV4,
    IPV6,
)
from blacklist_service.address_keys import NetworkSet
from blacklist_service.durations import parse_duration

DEFAULT_PORT = 5004
DEFAULT_METRICS_PORT = 9090
MAX_PORT = 65535
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_FORMAT = "text"
DEFAULT_RECIPIENT = "test@domain.com"
DEFAULT_SENDER = "blacklist-service@localhost"
DEFAULT_SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Read from the environment as text; everything else in app.config stays as given.
ENVIRONMENT_KEYS = (
    "PORT",
    "METRICS_PORT",
    "BIND_ADDRESS",
    "DATABASE_URL",
    "STATE_DIR",
    "MAIL_SERVER",
    "MAIL_PORT",
    "MAIL_USE_TLS",
    "MAIL_USE_SSL",
    "MAIL_USERNAME",
    "MAIL_PASSWORD",
    "MAIL_DEFAULT_SENDER",
    "ALERT_RECIPIENT",
    "TRUSTED_PROXIES",
    "ALLOWLIST",
    "BANLIST_CONFIGMAP",
    "POD_NAMESPACE",
    "POD_NAME",
    "SERVICE_ACCOUNT_DIR",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "BAN_DURATION",
    "BAN_PREFIX_IPV4",
    "BAN_PREFIX_IPV6",
    "LOG_FORMAT",
)
BOOLEAN_KEYS = ("MAIL_USE_TLS", "MAIL_USE_SSL", "BACKGROUND")
INTEGER_KEYS = ("PORT", "METRICS_PORT", "MAIL_PORT")


class ConfigError(ValueError):
    """A setting has a value the service cannot use."""


def default_state_dir(port: int) -> Path:
    """Where state lives when ``STATE_DIR`` is unset: one directory per port in the temp dir."""
    return Path(tempfile.gettempdir()) / f"blacklist-service-{port}"


def parse_boolean(name: str, value: object) -> bool:
    """``true``/``false`` (and 1/0, yes/no, on/off) as written in an environment variable."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"", "0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}")


def parse_integer(name: str, value: object) -> int:
    """A decimal integer setting."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {value!r}") from None


def parse_prefix_length(name: str, value: object, version: int) -> int:
    """A ban prefix length: an integer from 1 to the family's full length."""
    full = FULL_LENGTH[version]
    try:
        length = parse_integer(name, value)
    except ConfigError:
        length = 0
    if not 1 <= length <= full:
        raise ConfigError(f"{name} must be an integer from 1 to {full}, not {value!r}")
    return length


def parse_log_format(value: object) -> str:
    """``LOG_FORMAT``: ``text`` (the default) or ``json`` (:mod:`blacklist_service.logs`)."""
    name = str(value or "").strip().lower() or DEFAULT_LOG_FORMAT
    if name not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return name


def parse_metrics_port(value: object, port: int) -> int:
    """``METRICS_PORT``: a TCP port of its own, never the public ``PORT``."""
    metrics_port = parse_integer("METRICS_PORT", value)
    if not 1 <= metrics_port <= MAX_PORT:
        raise ConfigError(f"METRICS_PORT must be between 1 and {MAX_PORT}, not {metrics_port}")
    if metrics_port == port:
        # Both on one port would put the metrics back on the public interface.
        raise ConfigError(f"METRICS_PORT must differ from PORT ({port})")
    return metrics_port


def defaults() -> dict[str, Any]:
    """The settings a bare ``create_app()`` starts from."""
    return {
        "PORT": DEFAULT_PORT,
        "METRICS_PORT": DEFAULT_METRICS_PORT,
        "BIND_ADDRESS": "0.0.0.0",  # noqa: S104 - a server in a pod listens on every interface
        "MAIL_SERVER": None,
        "MAIL_PORT": 25,
        "MAIL_USE_TLS": False,
        "MAIL_USE_SSL": False,
        "MAIL_DEFAULT_SENDER": DEFAULT_SENDER,
        "ALERT_RECIPIENT": DEFAULT_RECIPIENT,
        "TRUSTED_PROXIES": "",
        "ALLOWLIST": "",
        "SERVICE_ACCOUNT_DIR": DEFAULT_SERVICE_ACCOUNT_DIR,
        # Start the delivery worker and ban-list watcher; unit tests turn it off.
        "BACKGROUND": True,
    }


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings present in the environment, with booleans and integers parsed."""
    source = os.environ if environ is None else environ
    found: dict[str, Any] = {key: source[key] for key in ENVIRONMENT_KEYS if key in source}
    return normalise(found)


def normalise(config: Mapping[str, Any]) -> dict[str, Any]:
    """Parse the boolean and integer keys of ``config`` (Flask-Mail needs real types)."""
    parsed = dict(config)
    for key in BOOLEAN_KEYS:
        if key in parsed:
            parsed[key] = parse_boolean(key, parsed[key])
    for key in INTEGER_KEYS:
        if key in parsed:
            parsed[key] = parse_integer(key, parsed[key])
    if parsed.get("MAIL_SERVER") == "":
        parsed["MAIL_SERVER"] = None
    return parsed


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to know, parsed and typed."""

    port: int
    bind_address: str
    state_dir: Path
    database_url: str
    mail_enabled: bool
    alert_recipient: str
    trusted_proxies: NetworkSet
    allowlist: NetworkSet
    banlist_configmap: str | None
    namespace: str | None
    service_account_dir: Path
    kubernetes_host: str | None
    kubernetes_port: int
    background: bool
    ban_duration: int | None = None  # seconds; None: bans last for ever
    # A hit bans the covering prefix of the caller's address, of these lengths.
    ban_prefix_ipv4: int = DEFAULT_IPV4_LENGTH
    ban_prefix_ipv6: int = DEFAULT_IPV6_LENGTH
    metrics_port: int = DEFAULT_METRICS_PORT
    log_format: str = DEFAULT_LOG_FORMAT

    @property
    def in_cluster(self) -> bool:
        """Whether the replica follows the operator's ban-list ConfigMaps."""
        return self.banlist_configmap is not None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Parse Flask's ``app.config`` (defaults, environment and overrides merged)."""
        port = parse_integer("PORT", config.get("PORT", DEFAULT_PORT))
        metrics_port = parse_metrics_port(config.get("METRICS_PORT", DEFAULT_METRICS_PORT), port)
        state_dir = Path(config.get("STATE_DIR") or default_state_dir(port))
        database_url = str(config.get("DATABASE_URL") or "").strip()
        if not database_url:
            database_url = f"sqlite:///{state_dir / 'ledger.sqlite3'}"
        if database_url.startswith("postgresql"):
            try:
                parse_url(database_url)
            except DatabaseUrlError as error:
                raise ConfigError(f"DATABASE_URL: {error}") from None
        banlist = str(config.get("BANLIST_CONFIGMAP") or "").strip() or None
        namespace = str(config.get("POD_NAMESPACE") or "").strip() or None
        account_dir = Path(str(config.get("SERVICE_ACCOUNT_DIR") or DEFAULT_SERVICE_ACCOUNT_DIR))
        if banlist is not None and namespace is None:
            namespace_file = account_dir / "namespace"
            if namespace_file.exists():
                namespace = namespace_file.read_text().strip()
            else:
                raise ConfigError("BANLIST_CONFIGMAP is set but POD_NAMESPACE is not")
        try:
            trusted = NetworkSet.parse(str(config.get("TRUSTED_PROXIES") or ""))
            allowlist = NetworkSet.parse(str(config.get("ALLOWLIST") or ""))
        except ValueError as error:
            raise ConfigError(str(error)) from None
        try:
            ban_duration = parse_duration(str(config.get("BAN_DURATION") or ""))
        except ValueError as error:
            raise ConfigError(f"BAN_DURATION: {error}") from None
        return cls(
            port=port,
            bind_address=str(config.get("BIND_ADDRESS") or "0.0.0.0"),  # noqa: S104
            state_dir=state_dir,
            database_url=database_url,
            mail_enabled=bool(config.get("MAIL_SERVER")),
            alert_recipient=str(config.get("ALERT_RECIPIENT") or DEFAULT_RECIPIENT),
            trusted_proxies=trusted,
            allowlist=allowlist,
            banlist_configmap=banlist,
            namespace=namespace,
            service_account_dir=account_dir,
            kubernetes_host=str(config.get("KUBERNETES_SERVICE_HOST") or "").strip() or None,
            kubernetes_port=parse_integer(
                "KUBERNETES_SERVICE_PORT", config.get("KUBERNETES_SERVICE_PORT") or 443
            ),
            background=parse_boolean("BACKGROUND", config.get("BACKGROUND", True)),
            ban_duration=ban_duration,
            ban_prefix_ipv4=parse_prefix_length(
                "BAN_PREFIX_IPV4", config.get("BAN_PREFIX_IPV4") or DEFAULT_IPV4_LENGTH, IPV4
            ),
            ban_prefix_ipv6=parse_prefix_length(
                "BAN_PREFIX_IPV6", config.get("BAN_PREFIX_IPV6") or DEFAULT_IPV6_LENGTH, IPV6
            ),
            metrics_port=metrics_port,
            log_format=parse_log_format(config.get("LOG_FORMAT")),
        )
