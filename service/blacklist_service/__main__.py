"""``python -m blacklist_service``: the production server on ``PORT`` (default 5004).

With arguments it runs a command instead (:mod:`blacklist_service.cli`):
``python -m blacklist_service lift ADDRESS ...`` lifts bans.
"""

from __future__ import annotations

import sys

from blacklist_service.serving.server import main

if __name__ == "__main__":
    if len(sys.argv) > 1:
        from blacklist_service.cli import main as command

        sys.exit(command(sys.argv[1:]))
    main()
