"""The ceiling of the serving stack: a bare WSGI app under the service's own gunicorn settings.

Run: ``python bench/bare_wsgi.py`` with ``PORT`` (and ``STATE_DIR``) set, as
``python -m blacklist_service`` would be; it answers every request with a fixed
body, so what remains is the cost of gunicorn itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from blacklist_service.config import Settings, defaults, from_environment
from blacklist_service.server import ProductionServer, options, prepare
from blacklist_service.workers import worker_plan

BODY = b"7744.0"


def application(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    """Answer ``7744.0`` as text, whatever the request."""
    start_response(
        "200 OK", [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "6")]
    )
    return [BODY]


class BareServer(ProductionServer):
    """The production server's settings, serving :func:`application`."""

    def load(self) -> Any:
        """The bare app instead of ``create_app()``."""
        return application


def main() -> None:
    """Serve the bare app with the production server's options."""
    config = defaults()
    config.update(from_environment())
    settings = Settings.from_config(config)
    prepare(settings)
    server_options = options(settings, worker_plan().count)
    server_options.pop("worker_exit")  # there is no service state to stop
    BareServer(server_options).run()


if __name__ == "__main__":
    main()
