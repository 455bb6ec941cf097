"""The lock files: every pin hashed, one version per package, each image lock exactly its extra.

``make lock`` writes them (``hack/lock.sh``); these checks need no network: the
dependency closure of each extra is read from the metadata of the packages
installed in this environment, which ``make setup`` installs from ``requirements.lock``.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_LOCKS = {"service": "requirements-service.lock", "operator": "requirements-operator.lock"}
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)==(\S+)")


def pins(lock: Path) -> dict[str, tuple[str, int]]:
    """Package -> (version, number of hashes) of a pip-compile lock file."""
    found: dict[str, tuple[str, int]] = {}
    name = ""
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match is not None:
            name = canonicalize_name(match.group(1))
            found[name] = (match.group(2).rstrip(" \\"), 0)
        elif line.strip().startswith("--hash=sha256:"):
            version, hashes = found[name]
            found[name] = (version, hashes + 1)
    return found


def extra_requirements(extra: str) -> list[Requirement]:
    """The requirements of an extra of pyproject.toml."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["optional-dependencies"][extra]]


def closure(requirements: list[Requirement]) -> set[str]:
    """Every package ``requirements`` pull in, by the installed packages' metadata."""
    seen: set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(requirement.name) or []:
            dependency = Requirement(text)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                todo.append(dependency)
    return seen


@pytest.mark.parametrize("lock", ["requirements.lock", *IMAGE_LOCKS.values()])
def test_every_pin_carries_hashes(lock: str) -> None:
    locked = pins(REPO_ROOT / lock)
    assert locked
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []


@pytest.mark.parametrize(("extra", "lock"), IMAGE_LOCKS.items())
def test_an_image_lock_is_exactly_its_extra_at_the_full_locks_versions(
    extra: str, lock: str
) -> None:
    full = {name: version for name, (version, _) in pins(REPO_ROOT / "requirements.lock").items()}
    image = {name: version for name, (version, _) in pins(REPO_ROOT / lock).items()}
    assert set(image) == closure(extra_requirements(extra))
    assert {name: full.get(name) for name in image} == image


def test_the_full_lock_holds_every_extra_and_this_environment_matches_it() -> None:
    full = {name: version for name, (version, _) in pins(REPO_ROOT / "requirements.lock").items()}
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    everything = closure(
        [Requirement(text) for texts in project["optional-dependencies"].values() for text in texts]
    )
    assert everything <= set(full)
    installed = {name: metadata.version(name) for name in everything}
    assert installed == {name: full[name] for name in everything}
