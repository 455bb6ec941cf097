"""Start and stop long-running local processes by PID, with their logs in files.

Also :func:`stop_process`, for a server started as a child in a session of its own.

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

# A shell that starts the program in the background and prints its PID, then exits:
# the program is orphaned at once (adopted by init), so it outlives whoever started
# it — `make cluster-up` returns, a test session ends — and is nobody's zombie.
_LAUNCHER = '"$@" </dev/null >>"$0" 2>&1 & echo $!'


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
    """Start ``argv`` detached, in its own session, appending its output to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    launched = subprocess.run(
        ["/bin/sh", "-c", _LAUNCHER, str(log_path), *argv],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        start_new_session=True,
        check=True,
    )
    pid = int(launched.stdout.strip())
    executable = os.path.realpath(argv[0]) if os.path.sep in argv[0] else argv[0]
    return ProcessRecord(
        name=name, pid=pid, executable=executable, argv=tuple(argv), log=str(log_path)
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
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, signal.SIGKILL)


def stop_process(
    process: subprocess.Popen[bytes],
    timeout: float,
    stop_signal: int = signal.SIGTERM,
    *,
    whole_group: bool = False,
) -> int:
    """Send ``stop_signal`` to ``process`` (or its group); SIGKILL the group after ``timeout``.

    Returns the exit status. The process must lead its own group
    (``start_new_session=True``), so its children go with it when it is killed.
    A server that stops its own workers gets the signal alone (``whole_group``
    False), as a service manager would send it.
    """
    if process.poll() is None:
        if whole_group:
            os.killpg(process.pid, stop_signal)
        else:
            process.send_signal(stop_signal)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode
