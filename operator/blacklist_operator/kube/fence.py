"""The write fence of a leader: once its lease may have passed to another replica, it exits.

With leader election (``leadership``), a replica may write only while it holds the
Lease. The elector moves :data:`FENCE`'s deadline forward after every renewal
(local monotonic clock: it keeps counting while the process is frozen). The
process exits at once, before anything else is written, when

* a write through ``kube.api.KubernetesApi`` finds the deadline passed (every write of
  the reconcile and the ban sync goes through it);
* the watchdog thread wakes at the deadline and finds it not moved (a renewal
  hung, or the API server is unreachable);
* SIGCONT thaws a process that was stopped (``kill -STOP``, or a node frozen in a
  partition) past its deadline: the handler runs in the main thread, which runs
  kopf's event loop, before any of kopf's own writes can be sent.

Exiting, not stepping down in place, is the fence: no thread, task or connection
of the old leader can outlive it, and Kubernetes restarts the container as a
standby. What remains is the write whose check passed in the instant before a
freeze: the process cannot tell it apart from one sent just before, and an
ordinary Kubernetes object takes no fencing token (client-go's elector has the
same window).

On a clean stop the leader releases the Lease once kopf has finished; a write
some thread still attempts after that is refused (:class:`ReleasedError`) rather than
ending the process, so that the release and an orderly exit still happen.

Without leader election the fence is never armed and checks nothing.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
from types import FrameType

# EX_TEMPFAIL: the process ends on purpose, and its next start will do well.
LOST_LEADERSHIP_EXIT_CODE = 75

logger = logging.getLogger(__name__)


class ReleasedError(Exception):
    """A write after this replica gave the Lease up on its way out."""


class Fence:
    """The deadline past which this process must not write, and the watchdog that enforces it."""

    def __init__(self) -> None:
        # None: no leader election, writes are always allowed. -inf: not (or no longer) leading.
        self._deadline: float | None = None
        self._watching = False
        self._released = False
        self._changed = threading.Condition()
        self._watchdog: threading.Thread | None = None

    @property
    def armed(self) -> bool:
        """Whether leader election guards the writes of this process."""
        return self._deadline is not None

    def standby(self) -> None:
        """Leader election is on and this process does not lead (yet): every write exits."""
        with self._changed:
            self._deadline = -math.inf

    def lead(self, deadline: float) -> None:
        """This process leads until ``deadline`` (monotonic) unless a renewal moves it."""
        with self._changed:
            self._deadline = deadline
            self._watching = True
            self._changed.notify_all()
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch, name="leader-fence", daemon=True
                )
                self._watchdog.start()

    def extend(self, deadline: float) -> None:
        """A renewal succeeded: writes are allowed until ``deadline``."""
        with self._changed:
            if self._deadline is not None and deadline > self._deadline:
                self._deadline = deadline
                self._changed.notify_all()

    def close(self) -> None:
        """Leadership is being given up: the watchdog stops, any later write is refused."""
        with self._changed:
            self._watching = False
            self._released = True
            self._deadline = -math.inf
            self._changed.notify_all()

    def check(self) -> None:
        """Exit at once when this process must not write now; ``ReleasedError`` after a release."""
        deadline = self._deadline
        if deadline is None or time.monotonic() < deadline:
            return
        if self._released:
            # Stopping: kopf is done, and a write still under way in some thread must not
            # follow the release; refused, so the release and the exit still happen.
            raise ReleasedError("the leader Lease was released: this replica writes no more")
        lost(
            "a write was about to be sent after the renew deadline"
            if deadline > -math.inf
            else "a write was about to be sent by a replica that does not lead"
        )

    def check_after_thaw(self, _signal: int, _frame: FrameType | None) -> None:
        """SIGCONT: the process was stopped; if its deadline passed meanwhile, exit."""
        deadline = self._deadline
        if deadline is not None and deadline > -math.inf and time.monotonic() >= deadline:
            lost("the process was frozen past its renew deadline and has just been thawed")

    def _watch(self) -> None:
        with self._changed:
            while True:
                if not self._watching:
                    self._changed.wait()
                    continue
                deadline = self._deadline if self._deadline is not None else -math.inf
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    lost("the lease was not renewed before the renew deadline")
                self._changed.wait(remaining)


def lost(reason: str) -> None:
    """Log why, and end the process now: no cleanup, no further write of any thread."""
    logger.critical(
        f"Lost the leadership: {reason}. Exiting at once so that nothing more is written; "
        "the replica starts again as a standby"
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LOST_LEADERSHIP_EXIT_CODE)


def watch_for_thaw() -> None:
    """Check the fence whenever the process is continued after a stop (main thread only)."""
    signal.signal(signal.SIGCONT, FENCE.check_after_thaw)


FENCE = Fence()
