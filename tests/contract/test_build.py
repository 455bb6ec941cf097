"""The release a process reports: one version for both images, the chart and the Python project."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

from blacklist_contract.build import VERSION, build_labels

ROOT = Path(__file__).resolve().parents[2]


def test_the_version_is_the_projects_and_the_charts() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    assert VERSION == project == chart["appVersion"]


def test_a_released_image_names_its_version_and_revision_in_its_environment() -> None:
    assert build_labels({}) == (VERSION, "unknown")
    released = {"BLACKLIST_VERSION": "1.2.3", "BLACKLIST_REVISION": "0123abc"}
    assert build_labels(released) == ("1.2.3", "0123abc")
