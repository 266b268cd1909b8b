"""Prometheus plumbing every service shares: its own registry, and a batch histogram.

Each service object owns a :class:`~prometheus_client.CollectorRegistry` (several
live in one process in tests and ``prism up`` would collide in the global one);
:func:`service_registry` gives it the process, platform and GC collectors the
global registry would have had, so every /metrics shows CPU, memory and GC.

:class:`BatchHistogram` is a histogram for hot paths: ``observe_many`` bins a
whole batch in one numpy pass (no lock or Python call per value), and the
cumulative buckets are built only when Prometheus scrapes.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "CHECKPOINT_BUCKETS",
    "LATENCY_BUCKETS",
    "MERGE_BUCKETS",
    "ROUND_BUCKETS",
    "BatchHistogram",
    "serve",
    "service_registry",
]


def _decades(low: float, high: float) -> tuple[float, ...]:
    """Bucket bounds 1, 2.5, 5 per decade from ``low`` to ``high`` (both included).

    >>> _decades(0.01, 1.0)
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
    """
    out: list[float] = []
    decade = low
    while decade <= high * (1 + 1e-9):
        out += [round(decade * m, 12) for m in (1.0, 2.5, 5.0)]
        decade *= 10
    return tuple(b for b in out if b <= high * (1 + 1e-9))


# score latency: Kafka timestamp -> score delivered (acked); ms caught up, seconds behind
LATENCY_BUCKETS = (*_decades(0.001, 10.0), 30.0, 60.0)
# a checkpoint: a producer flush plus one Redis transaction (or one SQLite commit on an edge)
CHECKPOINT_BUCKETS = (*_decades(0.001, 10.0), 30.0)
# one round's merge: a strategy over a few summaries of up to ~10^5 weights, in memory
MERGE_BUCKETS = _decades(0.0001, 1.0)
# a round, first update in -> closed: bounded by --round-timeout (10 s to minutes)
ROUND_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def service_registry() -> CollectorRegistry:
    """A registry of its own with the default process, platform and GC collectors."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def serve(registry: CollectorRegistry, port: int, addr: str = "127.0.0.1") -> int:
    """Start a /metrics endpoint for ``registry``; ``port=0`` picks a free one, returned."""
    server, _ = start_http_server(port, addr=addr, registry=registry)
    return int(server.server_address[1])


class BatchHistogram(Collector):
    """A label-less histogram whose values arrive a batch at a time.

    One writer (the service's loop), any number of scrapes: a lock taken once
    per batch keeps a scrape from seeing a batch's count without its sum.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], labels: dict[str, str]
    ) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"buckets must be increasing and distinct, got {buckets!r}")
        self.name, self.documentation = name, documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._edges = list(buckets)
        self.label_names, self.label_values = list(labels), list(labels.values())
        # the last: +Inf; Python ints: one value at a time would cost a numpy scalar add each
        self._counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self._lock = threading.Lock()

    @property
    def counts(self) -> np.ndarray:
        """Observations per bucket (the last: above every bound), not cumulative."""
        with self._lock:
            return np.asarray(self._counts, dtype=np.int64)

    def observe_many(self, values: Sequence[float] | np.ndarray) -> None:
        """Bin a batch in one pass; ``le`` semantics (a value equal to a bound is in it)."""
        v = np.asarray(values, dtype=np.float64)
        if not v.size:
            return
        binned = np.bincount(np.searchsorted(self.bounds, v), minlength=len(self._counts))
        total = float(v.sum())
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, binned.tolist(), strict=True)]
            self.sum += total

    def observe(self, value: float) -> None:
        """One value (an edge agent's per-event path): a bisect, no numpy call."""
        i = bisect.bisect_left(self._edges, value)
        with self._lock:
            self._counts[i] += 1
            self.sum += value

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            cumulative = np.cumsum(self._counts).tolist()
            total = self.sum
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        bounds = [*(repr(float(b)) for b in self._edges), "+Inf"]
        family.add_metric(self.label_values, list(zip(bounds, cumulative, strict=True)), total)
        yield family
