"""Adaptive mini-batches: as big as the backlog, as late as the latency budget allows.

A fixed wait (the old ``--batch-wait 0.05``) held every event of a light load
for the whole wait, because ``Consumer.consume(n, timeout)`` returns only when
``n`` records are there or the time is up: ~50 ms of score latency for nothing.
Here a batch takes what is *ready*, and waits for more only while its
oldest record is younger than ``fill_share`` of ``max_delay_s``; the rest of
the budget is left for scoring, producing and the broker's acknowledgement.
Behind (the oldest record ten budgets old: a backlog) it waits up to the
budget to fill to ``max_size``: batches grow with the backlog, so throughput
stays.

Pure: ages come in as numbers (Kafka timestamps and a clock reading), so the
policy is tested without a broker (tests/unit/streams/test_batching.py).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatchPolicy"]


@dataclass(frozen=True, kw_only=True)
class BatchPolicy:
    """When a batch closes: at ``max_size`` records or at its fill deadline, whichever first.

    >>> policy = BatchPolicy(max_size=1000, max_delay_s=0.010)
    >>> policy.fill_wait_s(oldest_ts_ms=1_000, now_ms=1_002.0)  # 2 ms old: 1 ms more
    0.001
    >>> policy.fill_wait_s(oldest_ts_ms=1_000, now_ms=1_005.0)  # past its share: go
    0.0
    >>> policy.fill_wait_s(oldest_ts_ms=1_000, now_ms=1_020.0)  # late, not a backlog: go
    0.0
    >>> policy.fill_wait_s(oldest_ts_ms=1_000, now_ms=1_200.0)  # behind: fill the batch
    0.01
    """

    max_size: int = 1000
    max_delay_s: float = 0.010
    #: the share of the budget a batch may spend gathering records (3 ms of the
    #: default 10); the rest is for the event's way in (its producer's linger,
    #: the fetch), scoring, the score producer's linger and the broker's ack
    fill_share: float = 0.3
    #: behind = the oldest record older than this many budgets: a backlog, where
    #: waiting up to one budget to fill the batch adds at most a tenth
    behind_factor: float = 10.0

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"the batch size must be >= 1, got {self.max_size}")
        if not self.max_delay_s > 0:
            raise ValueError(f"the latency budget must be > 0 seconds, got {self.max_delay_s}")
        if not 0 <= self.fill_share <= 1:
            raise ValueError(f"fill_share must be within [0, 1], got {self.fill_share}")

    @property
    def fill_s(self) -> float:
        """The longest a batch ever waits for more records."""
        return self.max_delay_s * self.fill_share

    def fill_wait_s(self, *, oldest_ts_ms: float, now_ms: float) -> float:
        """How much longer the batch may wait for records, given its oldest one's timestamp.

        Fresh: until the oldest is :attr:`fill_s` old, never longer (a producer
        clock ahead of ours must not stretch the wait). Behind (the oldest is
        ``behind_factor`` budgets old: a backlog): up to ``max_delay_s`` to fill
        the batch, since full batches keep the throughput that works the backlog
        off, and the wait adds at most a tenth. Merely late records (a slow
        fetch, a busy core) are not a backlog: waiting for them would add the
        whole budget to every batch of a light load (measured: p50 31 ms inside
        the worker at 1,000 events/s when "behind" meant one budget). In
        between, and without a timestamp (``oldest_ts_ms <= 0``): 0.
        """
        if oldest_ts_ms <= 0:
            return 0.0
        age_s = (now_ms - oldest_ts_ms) / 1000
        if age_s > self.max_delay_s * self.behind_factor:
            return self.max_delay_s
        return round(min(max(self.fill_s - age_s, 0.0), self.fill_s), 6)

    @property
    def linger_ms(self) -> float:
        """The score producer's ``linger.ms``: a tenth of the budget, 5 ms at most.

        Linger only helps when produce calls trickle in; a batch's scores are
        produced in one loop, and while one request is in flight the next
        accumulates anyway, so a short linger costs no throughput (measured:
        docs/performance.md) and every millisecond of it is score latency.
        """
        return min(5.0, self.max_delay_s * 1000 / 10)

    def wants_more(self, size: int, wait_s: float) -> bool:
        """Whether to ask the consumer again: room left and time left."""
        return size < self.max_size and wait_s > 0
