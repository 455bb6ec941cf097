"""Which release a process belongs to: the version both images and the chart carry.

``VERSION`` moves with ``pyproject.toml``'s ``version`` and the chart's
``appVersion`` (a test holds the three equal). A released image carries its
version and git revision in the environment (``BLACKLIST_VERSION``,
``BLACKLIST_REVISION``), read by each side for its ``*_build_info`` metric.
"""

from __future__ import annotations

from collections.abc import Mapping

VERSION = "0.1.0"
VERSION_ENV = "BLACKLIST_VERSION"
REVISION_ENV = "BLACKLIST_REVISION"


def build_labels(environment: Mapping[str, str]) -> tuple[str, str]:
    """``(version, revision)`` of this build: the environment's, else this tree's version."""
    return environment.get(VERSION_ENV) or VERSION, environment.get(REVISION_ENV) or "unknown"
