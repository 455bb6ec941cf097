"""``Dockerfile.service``: hadolint-clean, multi-stage, slim, non-root, port 5004, no secrets."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile.service"
HADOLINT = Path(sys.executable).parent / "hadolint"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: list[tuple[str, str]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


@pytest.mark.process
def test_hadolint_finds_nothing() -> None:
    completed = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.strip() == ""


def test_multi_stage_on_a_slim_python_base() -> None:
    bases = [arguments for keyword, arguments in instructions() if keyword == "FROM"]
    assert len(bases) >= 2
    assert all(re.match(r"python:3\.\d+-slim", base) for base in bases), bases


def test_runs_as_a_numeric_non_root_user_and_exposes_5004_and_the_metrics_port() -> None:
    found = instructions()
    users = [arguments for keyword, arguments in found if keyword == "USER"]
    assert users, "no USER"
    user = users[-1].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert ("EXPOSE", "5004") in found
    assert ("EXPOSE", "9090") in found  # METRICS_PORT's default
    entrypoint = [arguments for keyword, arguments in found if keyword == "ENTRYPOINT"]
    assert entrypoint == ['["python", "-m", "blacklist_service"]']


def test_no_secrets_baked_in() -> None:
    for keyword, arguments in instructions():
        if keyword in {"ENV", "ARG", "LABEL"}:
            assert not re.search(r"PASSWORD|SECRET|TOKEN|MAIL_USERNAME", arguments), arguments


def test_the_image_installs_only_its_hashed_lock() -> None:
    runs = [arguments for keyword, arguments in instructions() if keyword == "RUN"]
    installs = [" ".join(run.split()) for run in runs if "pip install" in run]
    assert installs == [
        "--mount=type=secret,id=pip-ca "
        "/opt/venv/bin/pip install --require-hashes --no-deps -r /src/requirements-service.lock"
    ]
