"""The agent's bug boundary: a record that hits a bug is set aside, a run of them stops the node.

A bad record (undecodable, invalid) is data and dead-letters with its reason
code before it reaches here. What reaches here is an *unexpected* exception --
a bug in the learner, a sink or the agent. Letting it kill the process makes
the supervisor restart the agent on the same record forever; catching it for
good hides a broken node. So one record's bug is dead-lettered with the
exception type and a trace id (the traceback is logged under that id) and the
agent moves past it, while more than ``limit`` in a row means the bug is not
about one record: the agent stops with ``BugStreakError``, whose exit
code the supervisor does not restart.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from runtime.errors import BugStreakError

__all__ = ["BugFence", "Tripped"]


@dataclass(frozen=True)
class Tripped:
    """One record's bug: what to write in its dead letter and log."""

    error_type: str
    message: str
    trace_id: str
    in_a_row: int


class BugFence:
    """Counts bugs in a row; a record handled cleanly resets the run.

    Examples
    --------
    >>> fence = BugFence(limit=2)
    >>> fence.tripped(ValueError("x")).in_a_row, fence.over
    (1, False)
    >>> fence.passed(); fence.in_a_row
    0
    >>> trips = [fence.tripped(KeyError(k)) for k in "abc"]
    >>> fence.over, fence.total
    (True, 4)
    """

    def __init__(self, *, limit: int = 10) -> None:
        if limit < 0:
            raise ValueError(f"the bug limit must be >= 0, got {limit}")
        self.limit = limit
        self.in_a_row = 0
        self.total = 0

    @property
    def over(self) -> bool:
        """More than ``limit`` in a row: the bug is not about one record."""
        return self.in_a_row > self.limit

    def passed(self) -> None:
        self.in_a_row = 0

    def tripped(self, error: BaseException, *, trace_id: str | None = None) -> Tripped:
        self.in_a_row += 1
        self.total += 1
        return Tripped(
            error_type=type(error).__name__,
            message=str(error)[:500],
            trace_id=trace_id or uuid.uuid4().hex[:16],
            in_a_row=self.in_a_row,
        )

    def stop(self, last: Tripped) -> BugStreakError:
        """The error the agent stops with, naming the last bug and where to look."""
        return BugStreakError(
            f"{self.in_a_row} records in a row hit an internal error (limit {self.limit}); "
            f"the last: {last.error_type}: {last.message} (trace {last.trace_id}). "
            "Stopping instead of restarting into the same bug: read the traceback logged "
            "under that trace id, fix it, then start the node again "
            "(the records are in its dead-letter file)"
        )
