"""kopf's memo of this operator: the settings given at start and the shared state made at startup.

``__main__`` hands :class:`OperatorMemo` to ``kopf.operator(memo=...)``; kopf
passes it to the startup and cleanup handlers and a shallow copy of it to the
handlers of every object, so the one :class:`Runtime` the startup handler
stores in it is shared by all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blacklist_operator.banlist.sync.daemon import BanSyncSupervisor
from blacklist_operator.runtime.config import OperatorConfig
from blacklist_operator.runtime.state import Runtime


@dataclass
class OperatorMemo:
    """What every handler of the operator shares."""

    config: OperatorConfig = field(default_factory=OperatorConfig)
    _runtime: Runtime | None = None
    _supervisor: BanSyncSupervisor | None = None

    def started(self, runtime: Runtime, supervisor: BanSyncSupervisor) -> None:
        """Keep the shared state the startup handler made."""
        self._runtime, self._supervisor = runtime, supervisor

    @property
    def runtime(self) -> Runtime:
        """The shared state; only once the startup handler has run."""
        if self._runtime is None:
            raise RuntimeError("the startup handler has not stored the runtime in the memo")
        return self._runtime

    @property
    def supervisor(self) -> BanSyncSupervisor | None:
        """The ban sync, once the startup handler has started it."""
        return self._supervisor
