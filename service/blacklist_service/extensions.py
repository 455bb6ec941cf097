"""Flask extensions, created without an app and bound to it in ``create_app``."""

from __future__ import annotations

from flask_mail import Mail

mail = Mail()
