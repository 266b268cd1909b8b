"""When a service asked to ``--idle-exit`` may stop: caught up, with nothing new, long enough.

Shared by the central worker and the merge job. Quiet because the broker is
away is not idle, and the quiet right after a broker restart is not either:
the service is caught up at once while the producers are still in their
reconnect backoff. So the clock does not run from the last record; it runs
from the first look that finds the service caught up after it, and any look
that does not (no assignment, an end the broker does not tell, a lag) stops
it. A look may itself wait on the broker, and a service may block for a long
time elsewhere (a checkpoint waiting for its acks), so the time between two
looks never counts as caught up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_PAUSE_S = 5.0


class IdleClock:
    """Say when ``idle_exit_s`` seconds of being caught up, with no new record, have passed."""

    def __init__(
        self,
        idle_exit_s: float | None,
        *,
        look_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_exit_s = idle_exit_s
        self.look_every_s = look_every_s
        self._clock = clock
        self._last_activity = clock()
        self._next_look = float("-inf")
        self._failed_looks = 0
        self._caught_up_since: float | None = None

    def activity(self) -> None:
        """Records came (or partitions were assigned): not idle, start over."""
        self._last_activity = self._clock()
        self._caught_up_since = None
        self._failed_looks = 0

    def due(self, caught_up: Callable[[], bool]) -> bool:
        """True once caught up for ``idle_exit_s`` on end; ``caught_up`` asks the broker.

        It is called at most once per ``look_every_s`` and only after that long
        without a record, so a busy service makes no broker round trips here;
        after looks that fail the pause doubles up to ``MAX_PAUSE_S`` (a look
        while the broker is away waits on it, and the service has a group to
        rejoin).
        """
        if self.idle_exit_s is None:
            return False
        now = self._clock()
        if now - self._last_activity < self.look_every_s or now < self._next_look:
            return False
        ok = caught_up()
        looked = self._clock()
        if not ok:
            self._caught_up_since = None
            self._failed_looks += 1
            pause = min(self.look_every_s * 2**self._failed_looks, MAX_PAUSE_S)
            self._next_look = looked + max(pause, self.look_every_s)
            return False
        self._failed_looks = 0
        self._next_look = now + self.look_every_s
        if self._caught_up_since is None:
            self._caught_up_since = looked
        return looked - self._caught_up_since >= self.idle_exit_s
