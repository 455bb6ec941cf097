"""``python -m blacklist_operator``: parse the flags and run the kopf operator."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import logging
import os
import signal
from collections.abc import Sequence

import kopf

from blacklist_operator import logs, metrics
from blacklist_operator.controller import (
    handlers,  # noqa: F401  (registers the handlers with kopf)
    leadership,
)
from blacklist_operator.controller.memo import OperatorMemo
from blacklist_operator.kopf_compat import namespace_watch
from blacklist_operator.model.external import HostRule, parse_allowed_hosts
from blacklist_operator.model.resource import (
    DEFAULT_DATABASE_IMAGE,
    DEFAULT_IMAGE,
    ImageDefaults,
    host_path_allowed,
)
from blacklist_operator.runtime.config import (
    ADDRESS_MAP_ENV,
    DEFAULT_DATABASE_IMAGE_ENV,
    DEFAULT_MAX_BANS,
    DEFAULT_SERVICE_IMAGE_ENV,
    MAX_BANS_ENV,
    OperatorConfig,
    address_map_path,
)

LOG_LEVEL_ENV = "BLACKLIST_OPERATOR_LOG_LEVEL"
LOG_FORMAT_ENV = "BLACKLIST_OPERATOR_LOG_FORMAT"
METRICS_ADDRESS_ENV = "BLACKLIST_OPERATOR_METRICS_ADDRESS"
LOG_LEVELS = ("debug", "info", "warning", "error")


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line; every flag also documented in docs/configuration.md."""
    parser = argparse.ArgumentParser(
        prog="python -m blacklist_operator",
        description="Run the blacklist-operator: reconcile BlacklistService resources.",
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; glob patterns allowed)",
    )
    scope.add_argument(
        "--all-namespaces",
        "-A",
        action="store_true",
        help="watch every namespace (the default)",
    )
    parser.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE") or None,
        metavar="NAMESPACE",
        help="the namespace of the operator's own pods, the only one whose pods the database "
        "NetworkPolicies admit as the operator (default: env POD_NAMESPACE, set by the chart; "
        "none outside the cluster)",
    )
    parser.add_argument(
        "--database-address-map",
        default=None,
        help=f'JSON file {{"ns/name": "host:port"}} of database addresses (env {ADDRESS_MAP_ENV})',
    )
    parser.add_argument(
        "--peering",
        default=None,
        metavar="NAME",
        help="coordinate with other operator replicas through this kopf peering object "
        "(default: standalone, no peering)",
    )
    parser.add_argument(
        "--standalone",
        action="store_true",
        help="run without peering (the default; kept for clarity in manifests)",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("BLACKLIST_OPERATOR_LIVENESS"),
        metavar="URL",
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    parser.add_argument(
        "--metrics-address",
        type=_address,
        default=os.environ.get(METRICS_ADDRESS_ENV) or None,
        metavar="HOST:PORT",
        help="serve Prometheus metrics on /metrics at HOST:PORT, e.g. 0.0.0.0:8081 (:8081 is "
        f"every interface; default: env {METRICS_ADDRESS_ENV}, else not served)",
    )
    parser.add_argument(
        "--ban-poll-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="poll the ledger this often when no notification arrives (default 5)",
    )
    parser.add_argument(
        "--ban-rescan-interval",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="re-read the whole ledger this often, so deleted rows (unbans) leave the ban list "
        "(default 600)",
    )
    parser.add_argument(
        "--max-bans",
        type=_positive,
        default=os.environ.get(MAX_BANS_ENV) or DEFAULT_MAX_BANS,
        metavar="ENTRIES",
        help="entries a resource's ban list holds at most; past it the oldest bans are evicted "
        f"and the resource says so (default: env {MAX_BANS_ENV}, else {DEFAULT_MAX_BANS:,})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=16,
        help="reconciles that may run in parallel (default 16)",
    )
    parser.add_argument(
        "--allowed-host-path-prefix",
        action="append",
        default=[],
        metavar="DIRECTORY",
        help="allow spec.database.storage.hostPath in DIRECTORY and below (repeatable; "
        "whole path components: /data allows /data/pg, not /database). Default: none, "
        "every hostPath is refused",
    )
    parser.add_argument(
        "--host-path-init-image",
        default=DEFAULT_DATABASE_IMAGE,
        metavar="IMAGE",
        help="image of the init container that hands a hostPath directory to PostgreSQL's uid "
        "(root with CAP_CHOWN only; needs sh, stat and chown): the admin's, never the tenant's "
        f"spec.database.image (default {DEFAULT_DATABASE_IMAGE}; the chart: the operator's image)",
    )
    parser.add_argument(
        "--allowed-external-database-hosts",
        type=_allowed_hosts,
        default=(),
        metavar="CIDRS_AND_SUFFIXES",
        help="comma-separated networks (10.20.0.0/16) and DNS suffixes (db.example.com, and "
        "every name below it) where spec.database.external may be; any other host is refused "
        "before connecting. Default: empty, any host",
    )
    parser.add_argument(
        "--default-service-image",
        type=_image,
        default=os.environ.get(DEFAULT_SERVICE_IMAGE_ENV) or DEFAULT_IMAGE,
        metavar="IMAGE",
        help="the service image of a BlacklistService without spec.image (default: env "
        f"{DEFAULT_SERVICE_IMAGE_ENV}, set by the chart's defaults.serviceImage; else "
        f"{DEFAULT_IMAGE})",
    )
    parser.add_argument(
        "--default-database-image",
        type=_image,
        default=os.environ.get(DEFAULT_DATABASE_IMAGE_ENV) or DEFAULT_DATABASE_IMAGE,
        metavar="IMAGE",
        help="the PostgreSQL image of a BlacklistService without spec.database.image (default: "
        f"env {DEFAULT_DATABASE_IMAGE_ENV}, set by the chart's defaults.databaseImage; else "
        f"{DEFAULT_DATABASE_IMAGE})",
    )
    parser.add_argument(
        "--log-level",
        type=str.lower,
        choices=LOG_LEVELS,
        default=os.environ.get(LOG_LEVEL_ENV) or "info",
        help=f"log messages of this level and above (default: env {LOG_LEVEL_ENV}, set by the "
        "chart's operator.logLevel; else info)",
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="log debug messages (--log-level debug)"
    )
    parser.add_argument(
        "--log-format",
        type=str.lower,
        choices=logs.LOG_FORMATS,
        default=os.environ.get(LOG_FORMAT_ENV) or logs.LOG_FORMATS[0],
        help="text: the message alone; json: one JSON object per line with time, level, logger, "
        "message and the resource's namespace and name (default: env "
        f"{LOG_FORMAT_ENV}, set by the chart's operator.logFormat; else text)",
    )
    leadership.add_arguments(parser)
    arguments = parser.parse_args(argv)
    if arguments.log_level not in LOG_LEVELS:  # argparse does not check a default
        parser.error(f"{LOG_LEVEL_ENV}={arguments.log_level}: not one of {', '.join(LOG_LEVELS)}")
    if arguments.log_format not in logs.LOG_FORMATS:
        parser.error(
            f"{LOG_FORMAT_ENV}={arguments.log_format}: not one of {', '.join(logs.LOG_FORMATS)}"
        )
    return arguments


def _positive(text: str | int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def _image(text: str) -> str:
    if not text or any(character.isspace() for character in text):
        raise argparse.ArgumentTypeError(f"{text!r} is not an image reference")
    return text


def _address(text: str) -> tuple[str, int]:
    try:
        return metrics.parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _allowed_hosts(text: str) -> tuple[HostRule, ...]:
    try:
        return parse_allowed_hosts(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


class _QuietWatchers(logging.Filter):
    """Drop kopf's line per watch event: the watchers run for every status change."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Handler 'follow-", "Handler 'track-instances'"))


def main(argv: Sequence[str] | None = None) -> None:
    """Run the operator until it is signalled to stop."""
    arguments = parse_arguments(argv)
    for prefix in arguments.allowed_host_path_prefix:
        if not prefix.startswith("/") or ".." in prefix.split("/"):
            raise SystemExit(f"--allowed-host-path-prefix {prefix}: not an absolute path")
        # Nested prefixes would put one resource's directory (PREFIX/NS/N) inside another's.
        others = [other for other in arguments.allowed_host_path_prefix if other != prefix]
        if host_path_allowed(prefix, others):
            raise SystemExit(
                f"--allowed-host-path-prefix {prefix}: lies inside another allowed prefix"
            )
    config = OperatorConfig(
        namespaces=tuple(arguments.namespace),
        operator_namespace=arguments.operator_namespace,
        database_address_map=address_map_path(arguments.database_address_map),
        peering=None if arguments.standalone else arguments.peering,
        liveness=arguments.liveness,
        ban_poll_interval=arguments.ban_poll_interval,
        ban_rescan_interval=arguments.ban_rescan_interval,
        workers=arguments.workers,
        max_bans=arguments.max_bans,
        allowed_host_path_prefixes=tuple(arguments.allowed_host_path_prefix),
        host_path_init_image=arguments.host_path_init_image,
        allowed_external_database_hosts=arguments.allowed_external_database_hosts,
        images=ImageDefaults(arguments.default_service_image, arguments.default_database_image),
    )
    # SIGUSR1 writes every thread's stack to the log (stderr) and the operator goes on:
    # the first thing to ask of an operator that seems stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    namespace_watch.install()
    level = "debug" if arguments.verbose else arguments.log_level
    kopf.configure(verbose=level == "debug", log_format=kopf.LogFormat.PLAIN)
    logs.use_format(arguments.log_format)
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietWatchers())
    if arguments.metrics_address is not None:
        try:
            metrics.serve(arguments.metrics_address)
        except OSError as error:
            raise SystemExit(f"--metrics-address: cannot serve metrics: {error}") from error
        host, port = arguments.metrics_address
        logging.getLogger(__name__).info(f"Serving metrics on http://{host}:{port}/metrics")
    # With --leader-election, kopf starts only once this replica holds the Lease.
    leadership.run(
        leadership.settings(arguments),
        config.liveness,
        lambda: asyncio.run(
            kopf.operator(
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                standalone=config.peering is None,
                peering_name=config.peering,
                liveness_endpoint=config.liveness,
                memo=OperatorMemo(config),
            )
        ),
    )


if __name__ == "__main__":
    main()
