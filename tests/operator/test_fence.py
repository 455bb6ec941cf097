"""The leader's write fence in a real process: it ends the process at the deadline, and on thaw.

Each case runs a small Python program in a subprocess (``os._exit`` would end
pytest itself), arms ``blacklist_operator.kube.fence.FENCE`` as the elector does, and
checks what the process did: its exit code and its last log line.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

from blacklist_operator.kube.fence import LOST_LEADERSHIP_EXIT_CODE

pytestmark = pytest.mark.process

PRELUDE = """
import logging, sys, time
from blacklist_operator.kube.fence import FENCE, ReleasedError, watch_for_thaw
logging.basicConfig(level=logging.INFO, format="%(message)s")
"""


def run(program: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(program)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_a_leader_that_is_not_renewed_exits_at_its_deadline() -> None:
    started = time.monotonic()
    done = run(
        """
        FENCE.lead(time.monotonic() + 1.0)
        time.sleep(5)
        print("still running")
        """
    )
    took = time.monotonic() - started
    assert done.returncode == LOST_LEADERSHIP_EXIT_CODE, done.stderr
    assert "still running" not in done.stdout
    assert "Lost the leadership: the lease was not renewed before the renew deadline" in (
        done.stderr
    )
    assert 1.0 <= took < 4.0


def test_renewals_keep_a_leader_running() -> None:
    done = run(
        """
        FENCE.lead(time.monotonic() + 0.5)
        for _ in range(10):
            time.sleep(0.2)
            FENCE.extend(time.monotonic() + 0.5)
        FENCE.check()
        print("led for 2 s")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "led for 2 s" in done.stdout


def test_a_write_after_the_deadline_exits_before_it_is_sent() -> None:
    done = run(
        """
        FENCE.lead(time.monotonic() + 0.2)
        FENCE._watching = False  # only the check before a write is left to act
        time.sleep(0.4)
        FENCE.check()
        print("sent")
        """
    )
    assert done.returncode == LOST_LEADERSHIP_EXIT_CODE
    assert "sent" not in done.stdout
    assert "a write was about to be sent after the renew deadline" in done.stderr


def test_a_write_after_a_clean_release_is_refused_and_the_process_goes_on() -> None:
    done = run(
        """
        FENCE.lead(time.monotonic() + 5)
        FENCE.close()
        try:
            FENCE.check()
        except ReleasedError as error:
            print("refused:", error)
        time.sleep(0.2)
        print("exited cleanly")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "refused: the leader Lease was released" in done.stdout
    assert "exited cleanly" in done.stdout


def test_a_process_thawed_past_its_deadline_exits_at_once() -> None:
    program = PRELUDE + textwrap.dedent(
        """
        FENCE.lead(time.monotonic() + 1.0)
        FENCE._watching = False  # only the SIGCONT handler is left to act
        watch_for_thaw()
        print("ready", flush=True)
        while True:
            time.sleep(0.01)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready"
            process.send_signal(signal.SIGSTOP)
            time.sleep(1.5)
            thawed = time.monotonic()
            process.send_signal(signal.SIGCONT)
            assert process.wait(timeout=5) == LOST_LEADERSHIP_EXIT_CODE
            assert time.monotonic() - thawed < 1.0
            assert process.stderr is not None
            assert "frozen past its renew deadline and has just been thawed" in (
                process.stderr.read()
            )
        finally:
            process.kill()  # the program never ends by itself


def test_a_short_freeze_within_the_deadline_changes_nothing() -> None:
    program = PRELUDE + textwrap.dedent(
        """
        FENCE.lead(time.monotonic() + 30)
        watch_for_thaw()
        print("ready", flush=True)
        time.sleep(1.0)
        print("still leading", flush=True)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        process.send_signal(signal.SIGCONT)
        assert process.wait(timeout=5) == 0
        assert process.stdout.readline().strip() == "still leading"
