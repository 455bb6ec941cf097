"""``python -m blacklist_service``: the production server on ``PORT`` (default 5004)."""

from __future__ import annotations

from blacklist_service.server import main

if __name__ == "__main__":
    main()
