"""A stop signal that reaches a worker before its server listens for one: not lost any more.

A worker is forked with the main process's signal handlers, and the server
installs the worker's own only later: granian after the target loader
returned (after the worker built its app), gunicorn a moment after the fork.
Until then SIGTERM or SIGINT ran the main process's handler on the worker's
copy of the server, which stops nothing: the stop was lost, and the worker
was killed after ``GRACEFUL_TIMEOUT`` ("refused to gracefully stop"). A pod
deleted while it started took 25 s to go.

:func:`watch_forks` closes that gap for every worker the main process forks:
the stop signals are blocked across the fork, and the new worker installs
:data:`EARLY_STOP`'s handler before it unblocks them; the handler notes the
signal. Then, by server:

* granian: the loader leaves (:meth:`EarlyStop.leave_if_stopped`) once the
  app is built, instead of handing it over, and a signal that comes after, in
  the moment before granian's handler replaces this one, ends the worker at
  once. Either way it exits through ``SystemExit(0)``, so its
  ``multiprocessing`` exit finalizers run: its background work stops as at any
  stop;
* gunicorn: the app's loader, which runs once gunicorn's handlers are in
  place, raises the noted signal again (:meth:`EarlyStop.pass_on`), and the
  worker stops as any worker does.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

logger = logging.getLogger(__name__)

# The signals that stop a worker (granian's and gunicorn's workers handle both).
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


class EarlyStop:
    """Owns a new worker's stop signals until its server's handlers replace this one's."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.started = False

    def take_over(self) -> None:
        """In a new worker, stop signals blocked: handle them here, then unblock them."""
        self.received = None
        self.started = False
        for number in STOP_SIGNALS:
            signal.signal(number, self.receive)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def receive(self, number: int, _frame: FrameType | None) -> None:
        """Signal handler: note the stop while the app is built; once it is, leave at once."""
        if self.received is None:
            self.received = number
        if self.started:
            # Only granian's few lines between the loader and its own handlers are cut short.
            raise SystemExit(0)

    def leave_if_stopped(self) -> None:
        """granian, at the end of the worker's start: leave if a stop came meanwhile."""
        if self.received is not None:
            logger.info(
                "Worker %d leaves: %s came while it started",
                os.getpid(),
                signal.Signals(self.received).name,
            )
            raise SystemExit(0)
        self.started = True

    def pass_on(self) -> None:
        """gunicorn, once its handlers are in place: raise the stop that came before again."""
        if self.received is not None:
            logger.info(
                "Worker %d stops: %s came while it started",
                os.getpid(),
                signal.Signals(self.received).name,
            )
            signal.raise_signal(self.received)


EARLY_STOP = EarlyStop()


def hold_stop_signals() -> None:
    """Before a fork: keep the stop signals pending in the forking thread."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def release_stop_signals() -> None:
    """After a fork, in the main process: deliver what came meanwhile to its own handlers."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def watch_forks() -> None:
    """From now on, every worker this process forks owns its stop signals from its first moment."""
    os.register_at_fork(
        before=hold_stop_signals,
        after_in_parent=release_stop_signals,
        after_in_child=EARLY_STOP.take_over,
    )
