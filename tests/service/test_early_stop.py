"""How a granian worker treats a stop signal before granian's handler is in place (in-process)."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from blacklist_service.serving.early_stop import (
    STOP_SIGNALS,
    EarlyStop,
    hold_stop_signals,
    release_stop_signals,
)


@pytest.fixture
def own_handlers() -> Iterator[None]:
    """Put this process's handlers for the stop signals back after the test."""
    saved = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    yield
    release_stop_signals()
    for number, handler in saved.items():
        signal.signal(number, handler)


def test_a_stop_while_the_app_is_built_makes_the_worker_leave_once_it_is() -> None:
    early_stop = EarlyStop()
    early_stop.receive(signal.SIGTERM, None)  # the build goes on
    with pytest.raises(SystemExit) as leaving:
        early_stop.leave_if_stopped()
    assert leaving.value.code == 0


def test_a_stop_after_the_start_ends_the_worker_at_once() -> None:
    early_stop = EarlyStop()
    early_stop.leave_if_stopped()  # no stop came: the app goes to granian
    with pytest.raises(SystemExit) as leaving:
        early_stop.receive(signal.SIGINT, None)
    assert leaving.value.code == 0


@pytest.mark.usefixtures("own_handlers")
def test_a_signal_held_across_the_fork_reaches_the_new_workers_handler() -> None:
    early_stop = EarlyStop()
    hold_stop_signals()  # as before a fork
    # To this thread (the one that forks): pending while blocked, not lost.
    signal.raise_signal(signal.SIGTERM)
    early_stop.take_over()  # as in the new worker
    assert early_stop.received == signal.SIGTERM
    assert signal.getsignal(signal.SIGINT) == early_stop.receive
    assert not STOP_SIGNALS & signal.pthread_sigmask(signal.SIG_BLOCK, [])


@pytest.mark.usefixtures("own_handlers")
def test_a_stop_noted_before_the_servers_handler_is_raised_again_for_it() -> None:
    early_stop = EarlyStop()
    early_stop.receive(signal.SIGTERM, None)
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda number, _frame: received.append(number))  # the server's
    early_stop.pass_on()
    assert received == [signal.SIGTERM]
