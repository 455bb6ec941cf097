"""Fixtures of the service tests: replicas of the service as real processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.processes import ServiceFactory


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[ServiceFactory]:
    """Start service processes; they are stopped when the test ends."""
    factory = ServiceFactory(tmp_path)
    yield factory
    factory.stop_all()
