"""The production server: gunicorn with threaded workers, configured from the environment.

Chosen by measurement (``bench/service_bench.py``, 2 cores, wrk over loopback):
gunicorn serves ``/?n=88`` about 5x faster than Flask's development server,
with a quarter of its median latency, and reaches about 0.7x of a bare WSGI
app under the same settings (the rest is Flask's own cost per request).
``sync`` and ``gthread`` workers measured within run-to-run noise of each
other (0.8x to 1.6x); ``gthread`` wins on behaviour: idle keep-alive
connections wait in its poller instead of pinning a worker, which matters
because the NodePort Service puts no buffering proxy in front. SIGTERM stops
gracefully: workers finish their requests in flight, then the delivery
worker finishes its current round.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from blacklist_service.config import ConfigError, Settings, defaults, from_environment
from blacklist_service.markers import clear_markers
from blacklist_service.workers import worker_plan

logger = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
GRACEFUL_TIMEOUT = 25  # under Kubernetes' default 30 s termination grace period


def _stop_background(_server: Any, worker: Any) -> None:
    """Gunicorn ``worker_exit`` hook: let the delivery worker finish its round."""
    from blacklist_service.state import service_state

    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        service_state(app).background.stop()


def _freeze_startup_objects(_worker: Any) -> None:
    """Gunicorn ``post_worker_init`` hook: exempt what start-up built from garbage collection.

    Flask, SQLAlchemy and friends leave hundreds of thousands of long-lived
    objects; full collections would walk them all for nothing.
    """
    gc.freeze()


def _forget_worker(_server: Any, worker: Any) -> None:
    """Gunicorn ``child_exit`` hook: drop a dead worker's live metric files."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class ProductionServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running ``create_app()`` in each worker (no preload: each worker owns its state)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Hand our options to gunicorn."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        """Build the app, in the worker process."""
        from blacklist_service.app import create_app

        return create_app()


def bind_address(settings: Settings) -> str:
    """Gunicorn's bind string (IPv6 addresses in brackets)."""
    host = settings.bind_address
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{settings.port}"


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


def options(settings: Settings, workers: int) -> dict[str, Any]:
    """Gunicorn settings."""
    return {
        "bind": [bind_address(settings)],
        "workers": workers,
        # WORKER_CLASS=sync exists for the benchmark's comparison; gthread is the choice.
        "worker_class": os.environ.get("WORKER_CLASS", "gthread"),
        "threads": int(os.environ.get("WORKER_THREADS", "4")),
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 30,
        "keepalive": 5,
        "accesslog": "-" if os.environ.get("ACCESS_LOG", "") in {"1", "true"} else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "blacklist-service",
        # gunicorn's runtime control socket would need a writable home directory and
        # offers nothing Kubernetes does not; the root filesystem is read-only anyway.
        "control_socket_disable": True,
        "worker_exit": _stop_background,
        "post_worker_init": _freeze_startup_objects,
        "child_exit": _forget_worker,
    }


def main() -> None:
    """Serve until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    config = defaults()
    try:
        config.update(from_environment())
        settings = Settings.from_config(config)
    except ConfigError as error:
        raise SystemExit(f"blacklist-service: bad configuration: {error}") from None
    prepare(settings)
    plan = worker_plan()
    logger.info("Starting %d worker(s): %s", plan.count, plan.reason)
    ProductionServer(options(settings, plan.count)).run()
