"""A server a test or the demo starts and stops: ``with`` starts it and closes it again."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Server:
    """Something started by :meth:`start` and released by :meth:`close` (by default, stopped)."""

    def start(self) -> None:
        """Start serving."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop serving."""
        raise NotImplementedError

    def close(self) -> None:
        """What leaving a ``with`` block does: stop."""
        self.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
