"""``GET /metrics`` on ``METRICS_PORT``, apart from the public ``PORT``.

The metrics say when bans stop propagating (``blacklist_ledger_connected``)
and cost a scrape's work; the NodePort Service (and any Ingress) exposes
``PORT`` to everyone, so the metrics are not served there (``/metrics`` on
``PORT`` is an unknown path, 404) but on a port of their own that the Service
does not expose and Prometheus scrapes on the pod.

The server's main process binds the listening socket once, before any worker
starts (:func:`bind_listener`): a port that is taken or not allowed stops the
service at start with a message naming ``METRICS_PORT``, and no second server
can share the port unnoticed. The workers inherit the socket when they are
forked (both granian and gunicorn fork their workers on Linux), and each
accepts on it from one thread of its own (:func:`serve_metrics`), answering
with the same exposition as before: counters summed over every worker through
prometheus-client's multi-process files, gauges read from the replica's shared
state. So a scrape is answered while any worker lives, whichever it is, and
the main process needs no copy of the ban list.

This module imports no ``prometheus_client`` at import time: the main process
imports it before ``PROMETHEUS_MULTIPROC_DIR`` is set.
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TYPE_CHECKING

from blacklist_service.config import ConfigError

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)
METRICS_PATH = "/metrics"
BACKLOG = 64
# A scraper that stalls mid-request holds one worker's metrics thread at most this long.
CLIENT_TIMEOUT = 5.0

# The listening socket bound by the main process, inherited by forked workers.
_listener: socket.socket | None = None


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` (in the main process); ConfigError naming METRICS_PORT."""
    global _listener
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(BACKLOG)
    except OSError as error:
        listener.close()
        raise ConfigError(f"METRICS_PORT {port} cannot be served on {host}: {error}") from None
    # Every worker polls the one socket: whichever accepts first answers, the
    # others' accept must fail at once instead of blocking their thread.
    listener.setblocking(False)
    _listener = listener
    return listener


class _MetricsHandler(BaseHTTPRequestHandler):
    """``GET``/``HEAD /metrics``: the replica's metrics; any other path: 404."""

    server: _MetricsServer
    timeout = CLIENT_TIMEOUT
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:
        """Answer a scrape."""
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        """Answer a scrape without its body."""
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        if self.path.partition("?")[0] != METRICS_PATH:
            self.send_error(404)
            return
        from prometheus_client import CONTENT_TYPE_LATEST

        try:
            body = self.server.exposition()
        except Exception:
            logger.exception("Could not gather the metrics")
            self.send_error(500)
            return
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Scrapes come every few seconds: not worth a log line each."""


class _MetricsServer(HTTPServer):
    """One request at a time on an inherited listening socket (several workers share it)."""

    def __init__(self, listener: socket.socket, app: Flask) -> None:
        # Not bound here: the socket is the main process's; binding would resolve names too.
        super().__init__(listener.getsockname()[:2], _MetricsHandler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.app = app

    def exposition(self) -> bytes:
        """Every metric of the replica, in Prometheus text format."""
        from blacklist_service.markers import ledger_marker
        from blacklist_service.serving.exposition import exposition
        from blacklist_service.state import service_state

        state = service_state(self.app)
        return exposition(state.bans, state.outbox, ledger_marker(state.settings.state_dir))

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hangs up or stalls is its own problem, not an error of ours."""
        logger.debug("Metrics request from %s failed", client_address, exc_info=True)


def serve_metrics(app: Flask) -> bool:
    """In a worker: answer scrapes on the inherited socket from a daemon thread.

    False when there is no socket to serve (the app runs outside
    ``python -m blacklist_service``, or a worker was not forked from it).
    """
    if _listener is None:
        return False
    metrics_server = _MetricsServer(_listener, app)
    thread = threading.Thread(
        target=metrics_server.serve_forever, name="blacklist-metrics", daemon=True
    )
    thread.start()
    return True
