"""A service loop that SIGTERM and SIGINT ask to stop, never kill mid-record.

Every long-running Prism loop (central worker, merger, shadow job, edge
agent) finishes the record or batch in hand, saves what it must and leaves
its consumer group when told to stop; a signal only raises the flag the loop
checks between steps. One mixin so the four loops cannot drift apart on that.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

__all__ = ["GracefulStop"]

log = logging.getLogger(__name__)


class GracefulStop:
    """``stop()`` and SIGTERM/SIGINT set ``_stopping``; the loop ends at its next check.

    >>> loop = GracefulStop()
    >>> loop.stopping
    False
    >>> loop.stop()
    >>> loop.stopping
    True
    """

    _stopping: bool = False
    #: what the loop does once stopped, for the log line a signal leaves
    stop_reason: str = "finishing the batch in hand"

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self, *_: Any) -> None:
        """Ask the loop to finish what it holds and leave (also the signal handler)."""
        self._stopping = True

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %s: %s", signal.Signals(signum).name, self.stop_reason)
        self.stop()

    def install_signal_handlers(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`stop` (main thread only, as Python requires)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
