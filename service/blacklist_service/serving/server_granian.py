"""granian as the production server (the default): a Rust HTTP server calling the WSGI app.

Each worker process runs granian's HTTP/1.1 server (hyper, on a Tokio
runtime) and ``WORKER_THREADS`` Python threads that call the app; parsing,
keep-alive and writing happen outside the interpreter. HTTP/1.1 only, as with
gunicorn (no cleartext HTTP/2 upgrade). Its limits on a request: the request
line and headers together within :data:`MAX_HEAD_BYTES` (16 KiB), at most 100 header
fields (hyper's), anything larger answered 431 or the connection closed.

Lifecycle, matching what gunicorn's hooks did:

* a worker builds its app when it starts (:func:`blacklist_service.serving.server.start_worker`);
  a SIGTERM that reaches it before granian listens for one makes it leave as
  soon as the app is built (:mod:`blacklist_service.serving.early_stop`), so a
  server stopped as it starts exits at once rather than after the kill timeout;
* SIGTERM to the main process: it stops accepting, each worker finishes the
  requests in flight and returns, and then stops its background work from a
  ``multiprocessing`` exit finalizer (granian's workers are ``multiprocessing``
  children, which leave through ``os._exit`` and never run ``atexit``); a
  worker still busy after :data:`GRACEFUL_TIMEOUT` is killed;
* a worker that dies is replaced (granian's ``respawn_failed_workers``), and its
  live metric files dropped as it leaves.
"""

from __future__ import annotations

import os
from functools import partial
from multiprocessing.util import Finalize
from typing import Any

from flask import Flask
from granian import Granian
from granian.constants import HTTPModes, Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels

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

TARGET = "blacklist_service.app:create_app"  # for granian's log; the loader below builds it
KEEP_ALIVE_MS = 5_000  # an idle keep-alive connection, or one slow to send its head, is closed
MAX_HEAD_BYTES = 16 * 1024
# Worker exit finalizers run by priority, highest first; nothing else registers any.
FINALIZER_PRIORITY = 100


def _leave(app: Flask) -> None:
    stop_worker(app)
    forget_worker(os.getpid())


def load_worker(_target: str) -> Flask:
    """Granian's target loader, run in each worker: the app, and its stop at the worker's exit."""
    app = start_worker()
    Finalize(None, partial(_leave, app), exitpriority=FINALIZER_PRIORITY)
    EARLY_STOP.leave_if_stopped()
    return app


def server(settings: Settings, workers: int, threads: int) -> Any:
    """The configured granian server (not started)."""
    return Granian(
        TARGET,
        address=bind_host(settings),
        port=settings.port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        http=HTTPModes.http1,
        websockets=False,
        http1_settings=HTTP1Settings(
            header_read_timeout=KEEP_ALIVE_MS, keep_alive=True, max_buffer_size=MAX_HEAD_BYTES
        ),
        log_level=LogLevels.info,
        # Each worker configures its logging from this: the service's format for every line.
        log_dictconfig=logging_config(settings.log_format),
        log_access=access_log(),
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_TIMEOUT,
    )


def serve(settings: Settings, workers: int, threads: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    watch_forks()
    server(settings, workers, threads).serve(target_loader=load_worker)
