"""Dockerfile.operator is hadolint clean, multi-stage, non-root and runs the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blacklist_devtools.images import OPERATOR_IMAGE_ENV

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile.operator"


def hadolint() -> str:
    beside_python = Path(sys.executable).with_name("hadolint")
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint") or "hadolint"


@pytest.mark.process
def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_python_m() -> None:
    text = DOCKERFILE.read_text()
    assert text.count("FROM ") >= 2
    user_lines = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user_lines
    assert user_lines[-1].split()[1].split(":")[0] not in {"0", "root"}
    assert 'ENTRYPOINT ["python", "-m", "blacklist_operator"]' in text


def test_the_image_installs_only_its_hashed_lock() -> None:
    text = " ".join(DOCKERFILE.read_text().replace("\\\n", " ").split())
    assert text.count("pip install") == 1
    assert "pip install --require-hashes --no-deps -r /src/requirements-operator.lock" in text


def test_the_image_sets_the_allocator_the_benches_measure() -> None:
    # bench/ runs the operator with these; the image must run it the same way.
    text = DOCKERFILE.read_text()
    for name, value in OPERATOR_IMAGE_ENV.items():
        assert f"{name}={value}" in text, name
