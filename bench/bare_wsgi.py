"""The ceiling of the serving stack: a bare WSGI app under the service's own server settings.

Run: ``python bench/bare_wsgi.py`` with ``PORT`` (and ``STATE_DIR``, and
``SERVER`` to pick granian or gunicorn) set, as ``python -m blacklist_service``
would be; it answers every request with a fixed body, so what remains is the
cost of the server itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from blacklist_service.config import Settings, defaults, from_environment
from blacklist_service.serving import server_granian, server_gunicorn
from blacklist_service.serving.server import prepare, server_name, worker_threads
from blacklist_service.serving.sizing import worker_plan

BODY = b"7744.0"


def application(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    """Answer ``7744.0`` as text, whatever the request."""
    start_response(
        "200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "6")]
    )
    return [BODY]


def load_bare(_target: str) -> Any:
    """Granian's target loader: the bare app."""
    return application


class BareServer(server_gunicorn.ProductionServer):
    """The production server's gunicorn settings, serving :func:`application`."""

    def load(self) -> Any:
        """The bare app instead of ``create_app()``."""
        return application


def main() -> None:
    """Serve the bare app with the production server's options."""
    config = defaults()
    config.update(from_environment())
    settings = Settings.from_config(config)
    prepare(settings)
    workers, threads = worker_plan().count, worker_threads()
    if server_name(os.environ.get("SERVER")) == "granian":
        server_granian.server(settings, workers, threads).serve(target_loader=load_bare)
        return
    options = server_gunicorn.options(settings, workers, threads)
    options.pop("worker_exit")  # there is no service state to stop
    BareServer(options).run()


if __name__ == "__main__":
    main()
