"""The images ``make images`` built: their references, as the node pulls them.

``hack/images.sh`` pushes them to the test bed's registry and writes
``.local/images/images.json``: each image as ``REGISTRY/NAME:TAG@DIGEST``. The
demo, the tests and the benchmarks read it here, so that the local PostgreSQL
image (built from Debian's package, honestly named) is what they set as
``spec.database.image``, while the CRD's default stays the official image for
real clusters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]

MANIFEST = REPO_ROOT / ".local" / "images" / "images.json"
# The allocator settings the operator image sets (Dockerfile.operator): benches that run the
# operator as a local process use them too, so its memory is the image's.
OPERATOR_IMAGE_ENV = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "131072"}


def manifest() -> dict[str, Any]:
    """What ``make images`` recorded; a one-line hint when it never ran."""
    if not MANIFEST.exists():
        raise SystemExit(f"{MANIFEST} is missing: run `make images`")
    found: dict[str, Any] = json.loads(MANIFEST.read_text())
    return found


def reference(kind: str) -> str:
    """``REGISTRY/NAME:TAG@DIGEST`` of the ``service``, ``operator`` or ``postgres`` image."""
    return str(manifest()[kind])


def parts(kind: str) -> tuple[str, str, str]:
    """``(REGISTRY/NAME, TAG, DIGEST)`` of an image, as a chart's ``image`` values take it."""
    named, _, digest = reference(kind).partition("@")
    repository, _, tag = named.rpartition(":")
    return repository, tag, digest


def by_digest(kind: str) -> str:
    """``REGISTRY/NAME@DIGEST``: the same image under another reference (no tag)."""
    repository, _, digest = parts(kind)
    return f"{repository}@{digest}"


def spec_images() -> dict[str, Any]:
    """The ``BlacklistService`` spec fields that run the local images on the node."""
    return {"image": reference("service"), "database": {"image": reference("postgres")}}
