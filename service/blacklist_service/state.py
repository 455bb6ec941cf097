"""What one app instance shares between its blueprints: settings, ban list, outbox, worker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

from blacklist_service.bans.store import BanStore
from blacklist_service.config import Settings
from blacklist_service.delivery.outbox import Outbox

if TYPE_CHECKING:
    from blacklist_service.background import Background

EXTENSION_KEY = "blacklist_service"


@dataclass(frozen=True)
class ServiceState:
    """The parts of the service behind the HTTP interface."""

    settings: Settings
    bans: BanStore
    outbox: Outbox
    background: Background


def service_state(app: Flask | None = None) -> ServiceState:
    """The state of ``app`` (or of the current app)."""
    found: ServiceState = (app or current_app).extensions[EXTENSION_KEY]
    return found
