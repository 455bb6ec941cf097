"""A small tmpfs mounted for a test, and a filler that takes all of its free space (needs root)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = ".filler"


@contextlib.contextmanager
def small_tmpfs(point: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``point`` for the block; fail the test when not root.

    A full disk is proved on a real file system, never assumed: without root the
    test fails and says why (`make test` runs as root, as the local node needs).
    """
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root: run the service tests as root")
    point.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(point: Path) -> None:
    """Write a filler file until the file system at ``point`` has no byte left."""
    with (point / FILLER).open("ab", buffering=0) as filler:
        block = b"\0" * 4096
        while True:
            try:
                filler.write(block)
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise
                break
        for size in (512, 32, 1):
            try:
                while True:
                    filler.write(block[:size])
            except OSError as error:
                if error.errno != errno.ENOSPC:
                    raise


def free(point: Path) -> None:
    """Remove the filler."""
    (point / FILLER).unlink(missing_ok=True)
