"""An operator that seems stuck says where: SIGUSR1 writes every thread's stack to its log."""

from __future__ import annotations

import pytest

from blacklist_devtools.kube import wait_until
from tests.operator.helpers import OperatorProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_sigusr1_logs_every_thread_and_the_operator_goes_on(
    operator_process: OperatorProcess,
) -> None:
    stacks = operator_process.stacks()
    # The event loop's thread and the ban sync's workers are all there, each with its frames.
    assert stacks.count("Thread 0x") >= 2, stacks
    assert 'File "' in stacks, stacks
    assert "asyncio" in stacks, stacks
    assert wait_until(operator_process._alive, timeout=5)
