"""The IP-blacklisting web service: squares numbers, bans whoever calls ``/blacklisted``.

``create_app`` is imported lazily: ``python -m blacklist_service`` imports this
package in the server's master process, which must set up Prometheus'
multi-process mode before ``prometheus_client`` is first imported (it decides
the storage of every metric at import time).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

    from flask import Flask


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the Flask application: defaults, then the environment, then ``config``."""
    from blacklist_service.app import create_app as factory

    return factory(config)


__all__ = ["create_app"]
