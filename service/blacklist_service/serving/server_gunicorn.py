"""gunicorn as the production server (``SERVER=gunicorn``): threaded workers.

The server before granian, kept selectable. ``gthread`` workers: idle
keep-alive connections wait in its poller instead of pinning a worker, which
matters because the NodePort Service puts no buffering proxy in front
(``WORKER_CLASS=sync`` exists for the benchmark's comparison). Its limits on
a request: a request line of 4094 bytes, 100 header fields of 8190 bytes
each. SIGTERM stops gracefully: workers finish their requests in flight, then
the delivery worker finishes its current round (the ``worker_exit`` hook).
A SIGTERM that reaches a worker before gunicorn's handler is in place is
kept and raised again once it is (:mod:`blacklist_service.serving.early_stop`).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from blacklist_service.config import Settings
from blacklist_service.logs import logging_config
from blacklist_service.serving.early_stop import EARLY_STOP, watch_forks
from blacklist_service.serving.server import (
    GRACEFUL_TIMEOUT,
    access_log,
    bind_host,
    forget_worker,
    start_worker,
    stop_worker,
)


def _stop_background(_server: Any, worker: Any) -> None:
    """Gunicorn ``worker_exit`` hook: let the delivery worker finish its round."""
    app = getattr(worker, "wsgi", None)
    if isinstance(app, Flask):
        stop_worker(app)


def _forget_worker(_server: Any, worker: Any) -> None:
    """Gunicorn ``child_exit`` hook: drop a dead worker's live metric files."""
    forget_worker(worker.pid)


class ProductionServer(BaseApplication):  # type: ignore[misc]
    """gunicorn running ``create_app()`` in each worker (no preload: each worker owns its state)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        """Hand our options to gunicorn."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the app, in the worker process (gunicorn's signal handlers are in place)."""
        EARLY_STOP.pass_on()
        return start_worker()


def bind_address(settings: Settings) -> str:
    """Gunicorn's bind string (IPv6 addresses in brackets)."""
    host = bind_host(settings)
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{settings.port}"


def options(settings: Settings, workers: int, threads: int) -> dict[str, Any]:
    """Gunicorn settings."""
    return {
        "bind": [bind_address(settings)],
        "workers": workers,
        "worker_class": os.environ.get("WORKER_CLASS", "gthread"),
        "threads": threads,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "timeout": 30,
        "keepalive": 5,
        "accesslog": "-" if access_log() else None,
        "errorlog": "-",
        "loglevel": "info",
        # gunicorn's own lines in the service's format (LOG_FORMAT), secrets redacted.
        "logconfig_dict": logging_config(settings.log_format),
        "proc_name": "blacklist-service",
        # gunicorn's runtime control socket would need a writable home directory and
        # offers nothing Kubernetes does not; the root filesystem is read-only anyway.
        "control_socket_disable": True,
        "worker_exit": _stop_background,
        "child_exit": _forget_worker,
    }


def serve(settings: Settings, workers: int, threads: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    watch_forks()
    ProductionServer(options(settings, workers, threads)).run()
