"""The files of the ban store's generations in ``STATE_DIR/bans`` (docs/CONTRACTS.md).

``current`` names the generation a starting worker opens; ``lock`` is the
writers' ``flock``; ``snapshot-G`` and ``log-G`` are a generation's snapshot
and log.
"""

from __future__ import annotations

import os
from pathlib import Path

CURRENT_FILE = "current"
LOCK_FILE = "lock"


def snapshot_path(directory: Path, generation: int) -> Path:
    """The snapshot file of a generation."""
    return directory / f"snapshot-{generation}"


def log_path(directory: Path, generation: int) -> Path:
    """The log file of a generation."""
    return directory / f"log-{generation}"


def write_current(directory: Path, generation: int) -> None:
    """Name the current generation (replaced atomically: a reader sees the old or the new)."""
    temporary = directory / f"{CURRENT_FILE}.tmp"
    temporary.write_text(f"{generation}\n")
    os.replace(temporary, directory / CURRENT_FILE)


def write_whole(descriptor: int, data: bytes, start: int) -> None:
    """Write all of ``data`` at the end, or cut the file back to ``start`` and raise."""
    view = memoryview(data)
    written = 0
    try:
        while written < len(view):
            written += os.write(descriptor, view[written:])
    except OSError:
        # A part-way write (a full disk) would leave a torn record that every
        # reader would take the following records 32 bytes off by.
        os.ftruncate(descriptor, start)
        raise
