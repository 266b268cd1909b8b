"""Pair an edge's score with the central model's score of the same event, in bounded memory.

Framework-free like :mod:`streams.merger.rounds`: the loop decodes Score
records and hands them here with its clock. In hybrid mode an edge scores
every event and forwards a sample, which the central worker scores too; both
land on ``scores`` keyed by event id. A record waits in a window until the
other side's record of the same event comes, then the pair is counted and
forgotten. The window is bounded twice: ``max_pending`` records (the oldest
goes first) and ``ttl_ms`` of arrival time; an evicted record is counted as
unpaired (most are the edge's scores of events it did not forward). A pair's
event id is remembered in an equally bounded set, so a redelivered record
of a counted event is a duplicate, never a second pair.

Examples
--------
>>> join = ShadowJoin(threshold=0.5)
>>> join.offer("e1", "central", "fraud-linear", 0.9, now_ms=0) is None
True
>>> pair = join.offer("e1", "blend", "fraud-linear", 0.3, now_ms=1)
>>> round(pair.abs_diff, 3), pair.decisions_differ
(0.6, True)
>>> join.stats["fraud-linear"].n, join.stats["fraud-linear"].rate
(1, 1.0)
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass

__all__ = ["CENTRAL", "Pair", "ShadowJoin", "ShadowStats"]

CENTRAL = "central"  # Score.source of the central worker; every other source is an edge's


@dataclass(frozen=True)
class ShadowStats:
    """Pairs of one model, summed; adds with ``+`` (two jobs' totals, or a restart's)."""

    n: int = 0
    abs_diff: float = 0.0  # the sum of |p_edge - p_central|
    differ: int = 0  # pairs whose decisions at the threshold differ

    def add(self, pair: Pair) -> ShadowStats:
        return ShadowStats(
            self.n + 1, self.abs_diff + pair.abs_diff, self.differ + pair.decisions_differ
        )

    def __add__(self, other: ShadowStats) -> ShadowStats:
        return ShadowStats(
            self.n + other.n, self.abs_diff + other.abs_diff, self.differ + other.differ
        )

    @property
    def rate(self) -> float | None:
        """The share of pairs whose decisions differ (None before the first pair)."""
        return self.differ / self.n if self.n else None

    @property
    def mean_abs_diff(self) -> float | None:
        return self.abs_diff / self.n if self.n else None

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "pairs": self.n,
            "abs_diff_sum": self.abs_diff,
            "decisions_differ": self.differ,
            "disagreement_rate": self.rate,
            "mean_abs_diff": self.mean_abs_diff,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ShadowStats:
        return cls(int(d["pairs"]), float(d["abs_diff_sum"]), int(d["decisions_differ"]))


@dataclass(frozen=True)
class Pair:
    event_id: str
    model: str  # the edge's model name
    edge: float
    central: float
    threshold: float

    @property
    def abs_diff(self) -> float:
        return abs(self.edge - self.central)

    @property
    def decisions_differ(self) -> bool:
        return (self.edge >= self.threshold) != (self.central >= self.threshold)


class ShadowJoin:
    def __init__(
        self, *, threshold: float = 0.5, max_pending: int = 100_000, ttl_ms: int = 600_000
    ) -> None:
        if max_pending < 1 or ttl_ms < 1:
            raise ValueError("the shadow join needs max_pending >= 1 and ttl_ms >= 1")
        self.threshold, self.max_pending, self.ttl_ms = threshold, max_pending, ttl_ms
        # event id -> (side, model, score, arrived_ms), oldest first
        self._pending: OrderedDict[str, tuple[str, str, float, int]] = OrderedDict()
        self._paired: OrderedDict[str, None] = OrderedDict()
        self.stats: dict[str, ShadowStats] = {}
        self.counts: Counter[str] = Counter()  # unpaired-edge, unpaired-central, duplicate

    def __len__(self) -> int:
        return len(self._pending)

    def offer(
        self, event_id: str, source: str, model: str, score: float, *, now_ms: int
    ) -> Pair | None:
        """One Score record; the pair it completes, or None (it waits, or is a duplicate).

        A score that is not a finite number raises ValueError (the loop dead-letters
        the record): one NaN would poison every sum after it.
        """
        if not math.isfinite(score):
            raise ValueError(f"score of event {event_id!r} is {score}, not a finite number")
        self.expire(now_ms)
        side = "central" if source == CENTRAL else "edge"
        if event_id in self._paired:
            self.counts["duplicate"] += 1
            return None
        waiting = self._pending.get(event_id)
        if waiting is None:
            self._pending[event_id] = (side, model, float(score), now_ms)
            while len(self._pending) > self.max_pending:
                self._evict()
            return None
        if waiting[0] == side:  # the same side again: a redelivery; the first one stands
            self.counts["duplicate"] += 1
            return None
        del self._pending[event_id]
        edge, central = (score, waiting[2]) if side == "edge" else (waiting[2], score)
        name = model if side == "edge" else waiting[1]
        pair = Pair(event_id, name, float(edge), float(central), self.threshold)
        self.stats[name] = self.stats.get(name, ShadowStats()).add(pair)
        self._paired[event_id] = None
        while len(self._paired) > self.max_pending:
            self._paired.popitem(last=False)
        return pair

    def expire(self, now_ms: int) -> None:
        """Drop records older than ``ttl_ms`` (by arrival); they are counted as unpaired."""
        while self._pending:
            first = next(iter(self._pending.values()))
            if now_ms - first[3] < self.ttl_ms:
                return
            self._evict()

    def _evict(self) -> None:
        _, (side, _model, _score, _at) = self._pending.popitem(last=False)
        self.counts[f"unpaired-{side}"] += 1
