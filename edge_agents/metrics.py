"""Prometheus metrics of one edge agent, in a registry of its own.

Counters live in the agent's plain objects (cheap on the hot path); a
collector reads them at scrape time, so the per-event cost is zero. The
agent's histograms (score latency, save duration) are collectors of their own,
registered beside it; rates are left to PromQL's ``rate()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from runtime.metrics import serve, service_registry

__all__ = ["EdgeMetrics"]


#: the secure sender's counts by one label: (metric, help, label, key in the agent's stats)
_SECAGG_COUNTS = (
    ("prism_edge_secagg_rounds",
     "Secure rounds by this node's part: joined, delivered, abandoned, left.",
     "outcome", "secagg_rounds"),
    ("prism_edge_secagg_refused_records",
     "The merger's secure round records this node refused to act on, by reason.",
     "reason", "secagg_refused"),
    ("prism_edge_secagg_set_aside_summaries",
     "Outbox rows no secure round can take (dead-lettered, out of the queue), by reason.",
     "reason", "secagg_set_aside"),
)  # fmt: skip


class EdgeMetrics(Collector):
    """Exposes ``snapshot()`` -- a dict the agent builds -- as Prometheus families."""

    def __init__(
        self,
        node_id: str,
        snapshot: Callable[[], dict[str, Any]],
        histograms: Iterable[Collector] = (),
    ) -> None:
        self.node_id, self.snapshot = node_id, snapshot
        self.registry = service_registry()
        self.registry.register(self)
        for histogram in histograms:
            self.registry.register(histogram)

    def collect(self) -> Iterator[Any]:
        s = self.snapshot()
        node = [self.node_id]
        events = CounterMetricFamily("prism_edge_events", "Local events read.", labels=["node"])
        events.add_metric(node, s["events"])
        scores = CounterMetricFamily(
            "prism_edge_scores", "Scores by the model that made them.", labels=["node", "source"]
        )
        for source, n in s["scores_by_source"].items():
            scores.add_metric([self.node_id, source], n)
        offline = CounterMetricFamily(
            "prism_edge_offline_scores", "Scores written to the local file.", labels=["node"]
        )
        offline.add_metric(node, s["offline_scores"])
        dead = CounterMetricFamily(
            "prism_edge_dead_letters", "Bad local records, by reason.", labels=["node", "reason"]
        )
        for reason, n in s["dead_letters"].items():
            dead.add_metric([self.node_id, reason], n)
        bugs = CounterMetricFamily(
            "prism_edge_internal_errors",
            "Records set aside by an internal error (a bug, not a bad record).",
            labels=["node"],
        )
        bugs.add_metric(node, s["internal_errors"])
        summaries = CounterMetricFamily(
            "prism_edge_summaries", "Summaries cut and delivered.", labels=["node", "state"]
        )
        summaries.add_metric([self.node_id, "cut"], s["summaries_cut"])
        summaries.add_metric([self.node_id, "delivered"], s["summaries_delivered"])
        quality = GaugeMetricFamily(
            "prism_edge_model_metric_ratio",
            "Prequential metric (0..1) of the node's scores over the last 24 h of event time.",
            labels=["node", "model", "mode", "metric"],
        )
        for metric, value in s["quality"].items():
            quality.add_metric([self.node_id, s["model"], s["mode"], metric], value)
        yield from (events, scores, offline, dead, bugs, summaries, quality)
        for metric, doc, label, key in _SECAGG_COUNTS:
            family = CounterMetricFamily(metric, doc, labels=["node", label])
            for value, n in s.get(key, {}).items():
                family.add_metric([self.node_id, value], n)
            yield family
        for name, doc, value in (
            ("prism_edge_fallback_ratio", "Share of local-model scores.", s["fallback_ratio"]),
            (
                "prism_edge_outbox_unsent_summaries",
                "Summaries waiting in the outbox.",
                s["outbox_unsent"],
            ),
            ("prism_edge_connected", "1 while the broker answers.", float(s["connected"])),
            ("prism_edge_global_version", "Adopted global model version.", s["global_version"]),
            (
                "prism_edge_dp_budget_spent",
                "1 once the DP epsilon budget is spent: summaries stop, scoring goes on.",
                float(s["dp_budget_spent"]),
            ),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["node"])
            gauge.add_metric(node, value)
            yield gauge
        if s["dp_epsilon"] is not None:
            eps = GaugeMetricFamily(
                "prism_edge_dp_epsilon",
                "Epsilon spent by the node's DP releases (RDP accountant, at its delta).",
                labels=["node"],
            )
            eps.add_metric(node, s["dp_epsilon"])
            yield eps

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        return serve(self.registry, port, addr)
