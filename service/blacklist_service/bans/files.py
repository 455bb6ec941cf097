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


def remove_stale_generations(directory: Path) -> list[Path]:
    """Delete the snapshot and log files of generations other than ``current``'s; those deleted.

    A generation is replaced by writing the new one, naming it in ``current``, then
    unlinking the old files: a stop between the last two steps leaves the old ones,
    as large as the list, for good. Only for a start, before any worker opens the
    store (none then reads an old generation).
    """
    try:
        current = int((directory / CURRENT_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return []  # Nothing named: the first worker makes generation 1 and picks up none.
    keep = {snapshot_path(directory, current).name, log_path(directory, current).name}
    removed = []
    for path in (*directory.glob("snapshot-*"), *directory.glob("log-*")):
        if path.name not in keep and path.name.rpartition("-")[2].isdigit():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
