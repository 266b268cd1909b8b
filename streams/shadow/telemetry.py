"""The shadow job's Prometheus metrics: the stream services' set plus the disagreement.

Counters count pairs since this process started (``rate()`` them); the
gauges are the persisted totals (restored on restart, shared with `prism
status`), so a dashboard and the CLI show the same disagreement rate.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from streams.shadow.join import Pair, ShadowStats
from streams.telemetry import Telemetry

SERVICE = "shadow"


class ShadowTelemetry:
    def __init__(self) -> None:
        self.base = Telemetry(SERVICE)
        r = self.base.registry
        labels = ["service", "model"]
        self.pairs = Counter(
            "prism_shadow_pairs_total",
            "Events scored by an edge and by the central model, paired, by the edge's model.",
            labels,
            registry=r,
        )
        self.differ = Counter(
            "prism_shadow_decisions_differ_total",
            "Pairs whose decisions at the threshold differ (edge vs central).",
            labels,
            registry=r,
        )
        self.rate = Gauge(
            "prism_shadow_disagreement_ratio",
            "Share of all pairs so far (persisted totals) whose decisions differ.",
            labels,
            registry=r,
        )
        self.gap = Gauge(
            "prism_shadow_score_gap_ratio",
            "Mean |p_edge - p_central| over all pairs so far (persisted totals).",
            labels,
            registry=r,
        )
        self.total = Gauge(
            "prism_shadow_paired_events",
            "All pairs so far (persisted totals, across restarts).",
            labels,
            registry=r,
        )

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        return self.base.serve(port, addr)

    def paired(self, pair: Pair) -> None:
        self.pairs.labels(SERVICE, pair.model).inc()
        if pair.decisions_differ:
            self.differ.labels(SERVICE, pair.model).inc()

    def export(self, totals: dict[str, ShadowStats]) -> None:
        for model, s in totals.items():
            self.total.labels(SERVICE, model).set(s.n)
            if s.n:
                self.rate.labels(SERVICE, model).set(s.differ / s.n)
                self.gap.labels(SERVICE, model).set(s.abs_diff / s.n)
