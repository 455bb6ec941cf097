"""The application factory: settings, shared state, blueprints, background work."""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from blacklist_service.background import Background
from blacklist_service.bans.store import BanStore
from blacklist_service.config import Settings, defaults, from_environment, normalise
from blacklist_service.delivery.outbox import Outbox
from blacklist_service.extensions import mail
from blacklist_service.http import blacklisted, health, square
from blacklist_service.http.guard import BanGuard
from blacklist_service.http.square import SquareFastPath
from blacklist_service.metrics import SET_ASIDE, RequestCounter
from blacklist_service.state import EXTENSION_KEY, ServiceState

BANS_DIRECTORY = "bans"  # in STATE_DIR: the ban store's generations (docs/service.md)


def _count_set_aside(_aside: Path) -> None:
    SET_ASIDE.inc()


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then the environment, then ``config`` (tests)."""
    app = Flask("blacklist_service", static_folder=None)  # no static files to serve
    app.config.from_mapping(defaults())
    app.config.update(from_environment())
    if config is not None:
        app.config.update(normalise(config))
    settings = Settings.from_config(app.config)
    mail.init_app(app)

    settings.state_dir.mkdir(parents=True, exist_ok=True)
    bans = BanStore(settings.state_dir / BANS_DIRECTORY, carry_own=settings.in_cluster)
    outbox = Outbox(settings.state_dir / "outbox.sqlite3", on_set_aside=_count_set_aside)
    background = Background(app, settings, outbox, bans)
    app.extensions[EXTENSION_KEY] = ServiceState(settings, bans, outbox, background)

    for module in (square, blacklisted, health):
        app.register_blueprint(module.blueprint)
    # Outermost first: count every answer, refuse banned clients, answer plain squares, then Flask.
    guarded = BanGuard(SquareFastPath(app.wsgi_app), settings, bans)
    app.wsgi_app = RequestCounter(guarded)  # type: ignore[method-assign]

    if settings.background:
        background.start()
        # The production server stops it in its worker_exit hook; this covers the rest.
        atexit.register(background.stop)
    return app
