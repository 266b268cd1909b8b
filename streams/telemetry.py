"""Prometheus metrics of a stream service, in a registry of its own.

A registry per service object (not prometheus_client's global one) lets
several services live in one process -- tests, ``prism up`` -- without
"duplicated timeseries" errors; :meth:`Telemetry.serve` exposes it over HTTP.
Rates (events/s, rounds/s) are left to PromQL's ``rate()`` over the counters.
Histograms that a hot path feeds are :class:`~runtime.metrics.BatchHistogram`
(one numpy pass per batch); the rest are prometheus_client's own.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from runtime.metrics import (
    CHECKPOINT_BUCKETS,
    LATENCY_BUCKETS,
    MERGE_BUCKETS,
    ROUND_BUCKETS,
    BatchHistogram,
    serve,
    service_registry,
)


class Telemetry:
    """The metrics every Prism stream service reports (labels: service, and the rest)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = service_registry()
        r = self.registry
        self.events = Counter(
            "prism_events_total",
            "Records processed, by topic kind.",
            ["service", "kind"],
            registry=r,
        )
        self.dead_letters = Counter(
            "prism_dead_letters_total",
            "Records sent to dead-letter, by reason.",
            ["service", "reason"],
            registry=r,
        )
        self.lag = Gauge(
            "prism_consumer_lag_records",
            "High watermark minus position, by partition.",
            ["service", "topic", "partition"],
            registry=r,
        )
        self.metric = Gauge(
            "prism_model_metric_ratio",
            "Prequential metric (0..1) over the sliding window, by model and metric.",
            ["service", "model", "metric"],
            registry=r,
        )
        self.checkpoints = Counter(
            "prism_checkpoints_total", "Checkpoints written.", ["service"], registry=r
        )
        self.summaries = Counter(
            "prism_summaries_published_total", "WeightSummaries published.", ["service"], registry=r
        )
        self.merge_rounds = Counter(
            "prism_merge_rounds_total", "Rounds closed, by model.", ["service", "model"], registry=r
        )
        self.excluded = Counter(
            "prism_excluded_updates_total",
            "Updates a round excluded (screening, staleness), by model.",
            ["service", "model"],
            registry=r,
        )
        self.held_back = Counter(
            "prism_held_back_versions_total",
            "Global versions the quality gate kept from the sites, by model.",
            ["service", "model"],
            registry=r,
        )
        self.model_version = Gauge(
            "prism_model_version",
            "Latest published version, by model.",
            ["service", "model"],
            registry=r,
        )
        self.pending = Gauge(
            "prism_pending_events", "Scored events waiting for a label.", ["service"], registry=r
        )

        self.checkpoint_seconds = Histogram(
            "prism_checkpoint_duration_seconds",
            "A checkpoint (central: producer flush + Redis transaction; merger: the transaction).",
            ["service"],
            buckets=CHECKPOINT_BUCKETS,
            registry=r,
        )
        self.merge_seconds = Histogram(
            "prism_merge_duration_seconds",
            "Computing one round's merged model (the strategy and its wire round trip).",
            ["service", "model"],
            buckets=MERGE_BUCKETS,
            registry=r,
        )
        self.round_seconds = Histogram(
            "prism_round_duration_seconds",
            "A round from its first update to its close, on the merger's clock.",
            ["service", "model"],
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        # secure aggregation's rounds (merger --secure-agg; docs/secure-aggregation.md)
        self.secagg_rounds = Counter(
            "prism_secagg_rounds_total",
            "Secure rounds by outcome: opened, unmasked, abandoned.",
            ["service", "model", "outcome"],
            registry=r,
        )
        self.secagg_abandoned = Counter(
            "prism_secagg_abandoned_rounds_total",
            "Secure rounds abandoned (nothing published, increments offered again), by reason.",
            ["service", "model", "reason"],
            registry=r,
        )
        self.secagg_dropouts = Counter(
            "prism_secagg_dropouts_total",
            "Nodes that missed a step of a secure round, by step.",
            ["service", "model", "step"],
            registry=r,
        )
        self.secagg_refused = Counter(
            "prism_secagg_refused_steps_total",
            "Secure step records refused (dead-lettered), by reason.",
            ["service", "reason"],
            registry=r,
        )
        self.secagg_round_seconds = Histogram(
            "prism_secagg_round_duration_seconds",
            "A secure round from its first key advertisement to unmasked or abandoned.",
            ["service", "model"],
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.score_latency = BatchHistogram(
            "prism_score_latency_seconds",
            "An event's Kafka timestamp to its score handed to the producer.",
            LATENCY_BUCKETS,
            {"service": service},
        )
        r.register(self.score_latency)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Start the /metrics endpoint; ``port=0`` picks a free one, which is returned."""
        return serve(self.registry, port, addr)
