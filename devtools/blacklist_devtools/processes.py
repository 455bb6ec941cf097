"""Start and stop long-running local processes by PID, with their logs in files.

A process is recorded with its PID and the executable it runs, so that a later
``stop`` never signals a recycled PID that now belongs to something else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# The Popen objects of processes this interpreter started and has not stopped yet:
# kept so that they are not garbage-collected while running (which warns) and so
# that stop() can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """A process we started: its PID and the executable it was started from."""

    name: str
    pid: int
    executable: str
    argv: tuple[str, ...] = ()
    log: str = ""

    def alive(self) -> bool:
        """Tell whether the PID still runs the executable we started."""
        try:
            exe = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return False
        state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        if state == "Z":
            return False
        return Path(exe).name == Path(self.executable).name or exe.endswith(" (deleted)")


def spawn(
    name: str,
    argv: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ProcessRecord:
    """Start ``argv`` in its own session, detached, logging to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    executable = os.path.realpath(argv[0]) if os.path.sep in argv[0] else argv[0]
    return ProcessRecord(
        name=name, pid=process.pid, executable=executable, argv=tuple(argv), log=str(log_path)
    )


def stop(record: ProcessRecord, grace: float = 10.0) -> None:
    """Stop a recorded process: SIGTERM, then SIGKILL after ``grace`` seconds."""
    if not record.alive():
        return
    try:
        os.kill(record.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not record.alive():
            _reap(record.pid)
            return
        time.sleep(0.05)
    try:
        os.kill(record.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _reap(record.pid)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child, so it leaves no zombie."""
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
