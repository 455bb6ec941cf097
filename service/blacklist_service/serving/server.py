"""The production server of ``python -m blacklist_service``: granian by default, or gunicorn.

``SERVER`` chooses it (``granian`` or ``gunicorn``); both run ``WEB_CONCURRENCY``
worker processes (else a count from the container's limits, see
:mod:`blacklist_service.serving.sizing`), each building its own app (no preload),
with ``WORKER_THREADS`` threads calling it (default 4) and an access log only
with ``ACCESS_LOG=1``. ``/metrics`` is served on ``METRICS_PORT``, not on
``PORT`` (:mod:`blacklist_service.serving.metrics_server`). Both stop gracefully on
SIGTERM: the workers finish the requests in flight, then each stops its
background work (the delivery worker ends its round), within :data:`GRACEFUL_TIMEOUT`.

granian is the default by measurement (``bench/service_bench.py``, same run,
side by side, 2 cores): its HTTP layer is Rust, so the interpreter spends its
time on the app; see docs/benchmarks.md for the figures.
gunicorn stays selectable for a deployment that needs its behaviour, and is
the default behind trusted proxies (``TRUSTED_PROXIES`` set): granian hands a
request header ``X_Forwarded_For`` to the app as ``HTTP_X_FORWARDED_FOR``, the
same key as ``X-Forwarded-For`` (the later of the two wins), so a client behind
a proxy that passes headers with underscores on (most do; nginx drops them by
default) names its own address: it escapes its ban and gets anyone banned.
gunicorn drops such headers. ``SERVER=granian`` with trusted proxies is
honoured with a warning at start: the proxies must drop those headers.

This module holds what does not depend on the server: the settings, the
preparation of the state directory before any worker starts, and what a
worker does when it starts and stops.
"""

from __future__ import annotations

import gc
import logging
import logging.config
import os
import shutil
from typing import TYPE_CHECKING

from blacklist_service.bans.files import remove_stale_generations
from blacklist_service.config import (
    ConfigError,
    Settings,
    defaults,
    from_environment,
    parse_log_format,
)
from blacklist_service.logs import logging_config
from blacklist_service.markers import clear_markers
from blacklist_service.serving.metrics_server import bind_listener, serve_metrics
from blacklist_service.serving.sizing import worker_plan

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)
GRACEFUL_TIMEOUT = 25  # under Kubernetes' default 30 s termination grace period
SERVERS = ("granian", "gunicorn")
DEFAULT_SERVER = "granian"
# The default with TRUSTED_PROXIES: it drops request headers whose names have underscores.
PROXIED_SERVER = "gunicorn"
DEFAULT_THREADS = 4
STOPPED_MESSAGE = "Stopped gracefully"


def server_name(configured: str | None, behind_proxies: bool = False) -> str:
    """The server ``SERVER`` names; ConfigError for any other value.

    Unset: granian, or gunicorn ``behind_proxies`` (see the module's docstring).
    """
    name = (configured or "").strip().lower()
    if not name:
        name = PROXIED_SERVER if behind_proxies else DEFAULT_SERVER
    if name not in SERVERS:
        raise ConfigError(f"SERVER must be one of {', '.join(SERVERS)}, not {configured!r}")
    return name


def worker_threads() -> int:
    """Threads per worker calling the app (``WORKER_THREADS``, default 4)."""
    configured = os.environ.get("WORKER_THREADS", "").strip()
    try:
        threads = int(configured) if configured else DEFAULT_THREADS
    except ValueError:
        raise ConfigError(f"WORKER_THREADS must be an integer, not {configured!r}") from None
    if threads < 1:
        raise ConfigError(f"WORKER_THREADS must be at least 1, not {configured!r}")
    return threads


def access_log() -> bool:
    """Whether every request is logged (``ACCESS_LOG=1``)."""
    return os.environ.get("ACCESS_LOG", "") in {"1", "true"}


def bind_host(settings: Settings) -> str:
    """The address to bind, without brackets."""
    return settings.bind_address.strip("[]")


def prepare(settings: Settings) -> None:
    """Work that must happen once per start, before any worker: state dir, metrics, markers."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    # Workers inherit the environment: they must agree on the state directory.
    os.environ["STATE_DIR"] = str(settings.state_dir)
    metrics_dir = settings.state_dir / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # A marker left by a previous run would make this one ready before it synced or
    # loaded the ledger's bans, or claim a ledger connection it has not made.
    clear_markers(settings.state_dir)
    # A snapshot a previous run was writing when it stopped is of no use to anyone.
    bans = settings.state_dir / "bans"
    for unfinished in bans.glob("*.tmp"):
        unfinished.unlink(missing_ok=True)
    # So are the files of a generation replaced just before it stopped.
    for stale in remove_stale_generations(bans):
        logger.info("Removed %s, left by a generation replaced as the last run stopped", stale.name)


def start_worker() -> Flask:
    """Build the app in a worker process; exempt what start-up built from garbage collection.

    Flask, SQLAlchemy and friends leave hundreds of thousands of long-lived
    objects; full collections would walk them all for nothing.
    """
    from blacklist_service.app import create_app

    app = create_app()
    if not serve_metrics(app):
        logger.error("Worker %d has no metrics socket: its main process bound none", os.getpid())
    gc.freeze()
    logger.info("Worker %d serves", os.getpid())
    return app


def stop_worker(app: Flask) -> None:
    """At a worker's exit, after its last request: let the delivery worker finish its round."""
    from blacklist_service.state import service_state

    service_state(app).background.stop()
    logger.info("Worker %d stopped its background work", os.getpid())


def forget_worker(pid: int) -> None:
    """Drop a finished worker's live metric files (its counters stay and keep counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    config = defaults()
    try:
        logging.config.dictConfig(logging_config(parse_log_format(os.environ.get("LOG_FORMAT"))))
        config.update(from_environment())
        settings = Settings.from_config(config)
        server = server_name(os.environ.get("SERVER"), bool(settings.trusted_proxies))
        threads = worker_threads()
        plan = worker_plan()
        # Bound before any worker starts: the workers inherit it (metrics_server).
        bind_listener(bind_host(settings), settings.metrics_port)
    except ConfigError as error:
        raise SystemExit(f"blacklist-service: bad configuration: {error}") from None
    prepare(settings)
    if server == "granian" and settings.trusted_proxies:
        logger.warning(
            "SERVER=granian with TRUSTED_PROXIES: granian reads a header X_Forwarded_For as "
            "X-Forwarded-For, so the trusted proxies must drop headers with underscores "
            "(nginx does by default), or a client names its own address"
        )
    logger.info("Starting %s with %d worker(s): %s", server, plan.count, plan.reason)
    logger.info("Metrics on port %d at /metrics (not on PORT)", settings.metrics_port)
    if server == "granian":
        from blacklist_service.serving.server_granian import serve
    else:
        from blacklist_service.serving.server_gunicorn import serve
    main_process = os.getpid()
    try:
        serve(settings, plan.count, threads)
    except SystemExit as stop:  # gunicorn's master exits through sys.exit, 0 when graceful
        # ...and so does each of its workers, forked from inside serve(): not stopped yet.
        if stop.code not in (0, None) or os.getpid() != main_process:
            raise
    logger.info(STOPPED_MESSAGE)
